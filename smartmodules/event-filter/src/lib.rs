//! event-filter: keeps the event envelopes that are important enough and, optionally,
//! of the wanted types.
//!
//! Params (all optional):
//! - `min_importance`: keep events whose `payload.importance` is at least this (0.7).
//!   An event without a numeric `payload.importance` counts as 0.5, the middle of the
//!   0..1 scale, so the default threshold drops it.
//! - `types`: comma list (or JSON array) of envelope `type`s to keep; any type if absent.
//!
//! Values that are not a JSON object are dropped: they cannot meet the criteria.

#[path = "../../common/abi.rs"]
mod abi;
#[path = "../../common/json.rs"]
mod json;

const DEFAULT_MIN_IMPORTANCE: f64 = 0.7;
const MISSING_IMPORTANCE: f64 = 0.5;

struct Criteria {
    min_importance: f64,
    types: Option<Vec<String>>,
}

static mut CRITERIA: Criteria = Criteria { min_importance: DEFAULT_MIN_IMPORTANCE, types: None };

fn configure(params: &[(String, String)]) -> Result<Criteria, String> {
    let mut c = Criteria { min_importance: DEFAULT_MIN_IMPORTANCE, types: None };
    for (name, value) in params {
        match name.as_str() {
            "min_importance" => c.min_importance = abi::parse_importance(name, value)?,
            "types" => {
                let list = abi::parse_list(value).ok_or_else(|| {
                    format!("param types must be a comma list or a JSON array of strings, got '{}'", value)
                })?;
                c.types = if list.is_empty() { None } else { Some(list) };
            }
            _ => return Err(abi::unknown_param(name, "min_importance, types")),
        }
    }
    Ok(c)
}

fn keep(value: &[u8], c: &Criteria) -> bool {
    // One validating pass over the event finds both members.
    let keys = ["type", "payload.importance"];
    let (_, [event_type, importance]) = match json::document_fields(value, keys) {
        Some(found) => found,
        None => return false,
    };
    if let Some(types) = &c.types {
        let t = match event_type {
            Some(t) => t,
            None => return false,
        };
        if !types.iter().any(|wanted| json::string_equals(t, wanted)) {
            return false;
        }
    }
    let importance = importance.and_then(json::number).unwrap_or(MISSING_IMPORTANCE);
    importance >= c.min_importance
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
        Err(hint) => abi::init_error(&format!("event-filter: {}", hint)),
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
