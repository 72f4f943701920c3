//! memory-filter: keeps the memory-update records that match every given criterion.
//!
//! A memory update is read from the `payload` of a `memory_update` envelope (as the memory
//! pipeline writes them to `memory-updates`) or, for a bare update, from the top level:
//! `{"op", "memory_id", "memory_type",
//! "organization_id", "user_id", "agent_id", "importance", "content", "version",
//! "source", "timestamp"}`.
//!
//! Params (all optional; a record must match all that are given):
//! - `organization_id`: exact match.
//! - `user_id`: exact match.
//! - `memory_types`: comma list (or JSON array) of `memory_type`s.
//! - `min_importance`: `importance` at least this (missing importance counts as 0.5).
//! - `ops`: comma list (or JSON array) of ops among created, updated, deleted, expired.
//!
//! Values that are not a JSON object are dropped.

#[path = "../../common/abi.rs"]
mod abi;
#[path = "../../common/json.rs"]
mod json;

const MISSING_IMPORTANCE: f64 = 0.5;
const OPS: [&str; 4] = ["created", "updated", "deleted", "expired"];
const ACCEPTED: &str = "organization_id, user_id, memory_types, min_importance, ops";

struct Criteria {
    organization_id: Option<String>,
    user_id: Option<String>,
    memory_types: Option<Vec<String>>,
    min_importance: Option<f64>,
    ops: Option<Vec<String>>,
}

static mut CRITERIA: Criteria = Criteria {
    organization_id: None,
    user_id: None,
    memory_types: None,
    min_importance: None,
    ops: None,
};

fn list(name: &str, value: &str) -> Result<Option<Vec<String>>, String> {
    let items = abi::parse_list(value).ok_or_else(|| {
        format!("param {} must be a comma list or a JSON array of strings, got '{}'", name, value)
    })?;
    Ok(if items.is_empty() { None } else { Some(items) })
}

fn configure(params: &[(String, String)]) -> Result<Criteria, String> {
    let mut c = Criteria {
        organization_id: None,
        user_id: None,
        memory_types: None,
        min_importance: None,
        ops: None,
    };
    for (name, value) in params {
        match name.as_str() {
            "organization_id" => c.organization_id = Some(value.clone()),
            "user_id" => c.user_id = Some(value.clone()),
            "memory_types" => c.memory_types = list(name, value)?,
            "min_importance" => c.min_importance = Some(abi::parse_importance(name, value)?),
            "ops" => {
                c.ops = list(name, value)?;
                for op in c.ops.iter().flatten() {
                    if !OPS.contains(&op.as_str()) {
                        return Err(format!(
                            "param ops: '{}' is not an op; accepted: {}",
                            op,
                            OPS.join(", ")
                        ));
                    }
                }
            }
            _ => return Err(abi::unknown_param(name, ACCEPTED)),
        }
    }
    Ok(c)
}

fn is(field: Option<&[u8]>, wanted: &str) -> bool {
    field.map_or(false, |f| json::string_equals(f, wanted))
}

fn is_in(field: Option<&[u8]>, wanted: &[String]) -> bool {
    field.map_or(false, |f| wanted.iter().any(|w| json::string_equals(f, w)))
}

fn keep(value: &[u8], c: &Criteria) -> bool {
    let keys = [
        "organization_id",
        "user_id",
        "memory_type",
        "op",
        "importance",
        "payload.organization_id",
        "payload.user_id",
        "payload.memory_type",
        "payload.op",
        "payload.importance",
    ];
    let (_, [org, user, memory_type, op, importance, p_org, p_user, p_type, p_op, p_importance]) =
        match json::document_fields(value, keys) {
            Some(found) => found,
            None => return false,
        };
    // On the memory-updates topic an update travels in an envelope, under `payload`; a bare
    // update carries the same fields at the top.
    let org = p_org.or(org);
    let user = p_user.or(user);
    let memory_type = p_type.or(memory_type);
    let op = p_op.or(op);
    let importance = p_importance.or(importance);
    if let Some(wanted) = &c.organization_id {
        if !is(org, wanted) {
            return false;
        }
    }
    if let Some(wanted) = &c.user_id {
        if !is(user, wanted) {
            return false;
        }
    }
    if let Some(types) = &c.memory_types {
        if !is_in(memory_type, types) {
            return false;
        }
    }
    if let Some(ops) = &c.ops {
        if !is_in(op, ops) {
            return false;
        }
    }
    if let Some(min) = c.min_importance {
        let importance = importance.and_then(json::number).unwrap_or(MISSING_IMPORTANCE);
        if importance < min {
            return false;
        }
    }
    true
}

#[no_mangle]
pub unsafe extern "C" fn init(ptr: i32, len: i32, _version: i32) -> i32 {
    let input = abi::take_input(ptr, len);
    let params = match abi::parse_init(&input) {
        Some(p) => p,
        None => return abi::INIT_DECODING_INPUT,
    };
    match configure(&params) {
        Ok(c) => {
            CRITERIA = c;
            0
        }
        Err(hint) => abi::init_error(&format!("memory-filter: {}", hint)),
    }
}

#[no_mangle]
pub unsafe extern "C" fn filter(ptr: i32, len: i32, version: i32) -> i32 {
    let buf = abi::take_input(ptr, len);
    let input = match abi::parse_input(&buf, version, false) {
        Some(i) => i,
        None => return abi::ERR_DECODING_BASE_INPUT,
    };
    let records = match abi::records(input.records) {
        Some(r) => r,
        None => return abi::ERR_DECODING_BASE_INPUT,
    };
    let criteria = &CRITERIA;
    let mut out = abi::Output::new(input.records.len());
    for record in records {
        let record = match record {
            Some(r) => r,
            None => return abi::ERR_DECODING_BASE_INPUT,
        };
        if keep(record.value, criteria) {
            out.push_raw(record.raw);
        }
    }
    out.send(None, None)
}
