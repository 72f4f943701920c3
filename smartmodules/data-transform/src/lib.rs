//! data-transform: turns a `user_interaction` event envelope into a MemoryItem.
//!
//! Output value (JSON object):
//! `{"organization_id", "user_id", "content": payload.action, "memory_type",
//!   "importance": payload.importance (0.5 when missing), "timestamp": envelope
//!   timestamp (the record's when missing), "metadata": {"context": payload.context or
//!   null, "source_event_id", "source_event_type"}}`. The record key is kept.
//!
//! Params (optional): `memory_type`, the memory type to assign ("episodic").
//!
//! A record that is not such an envelope is a soft error: the records before it are
//! delivered, then the error with its offset. Put `event-filter` with
//! `types=user_interaction` in front when a topic carries other event types.

#[path = "../../common/abi.rs"]
mod abi;
#[path = "../../common/json.rs"]
mod json;

const MISSING_IMPORTANCE: f64 = 0.5;
const EVENT_TYPE: &str = "user_interaction";

static mut MEMORY_TYPE: Option<String> = None;

fn memory_type() -> &'static str {
    unsafe {
        match &MEMORY_TYPE {
            Some(t) => t.as_str(),
            None => "episodic",
        }
    }
}

fn string_field<'a>(field: Option<&'a [u8]>, name: &str) -> Result<&'a [u8], String> {
    match field {
        Some(v) if json::is_string(v) => Ok(v),
        Some(_) => Err(format!("field {} must be a string", name)),
        None => Err(format!("missing field {}", name)),
    }
}

/// Writes the MemoryItem for `value`, or says why the record is not a user_interaction
/// envelope.
fn transform(value: &[u8], record_timestamp: i64, out: &mut Vec<u8>) -> Result<(), String> {
    let keys = [
        "type",
        "organization_id",
        "user_id",
        "payload",
        "timestamp",
        "id",
        "payload.action",
        "payload.importance",
        "payload.context",
    ];
    let (_, [event_type, organization_id, user_id, payload, timestamp, id, action, importance, context]) =
        json::document_fields(value, keys).ok_or_else(|| {
            "value is not a JSON object (an event envelope was expected)".to_string()
        })?;
    let event_type = event_type.and_then(json::string);
    match event_type.as_deref() {
        Some(EVENT_TYPE) => {}
        Some(other) => {
            return Err(format!(
                "event type '{}' is not {}; put event-filter with types={} in front of data-transform",
                other, EVENT_TYPE, EVENT_TYPE
            ))
        }
        None => return Err("missing string field type".to_string()),
    }
    let organization_id = string_field(organization_id, "organization_id")?;
    let user_id = string_field(user_id, "user_id")?;
    if !matches!(payload, Some(p) if p.first() == Some(&b'{')) {
        return Err("missing payload object".to_string());
    }
    let action = match action {
        Some(a) if json::is_string(a) => a,
        _ => return Err("payload.action must be a string".to_string()),
    };
    let importance = importance.and_then(json::number).unwrap_or(MISSING_IMPORTANCE);

    out.reserve(value.len() + 160);
    out.extend_from_slice(b"{\"organization_id\":");
    out.extend_from_slice(organization_id);
    out.extend_from_slice(b",\"user_id\":");
    out.extend_from_slice(user_id);
    out.extend_from_slice(b",\"content\":");
    out.extend_from_slice(action);
    out.extend_from_slice(b",\"memory_type\":");
    json::write_string(out, memory_type());
    out.extend_from_slice(b",\"importance\":");
    json::write_number(out, importance);
    out.extend_from_slice(b",\"timestamp\":");
    match timestamp.filter(|t| json::number(t).is_some()) {
        Some(t) => out.extend_from_slice(t),
        None => out.extend_from_slice(record_timestamp.to_string().as_bytes()),
    }
    out.extend_from_slice(b",\"metadata\":{\"context\":");
    out.extend_from_slice(context.unwrap_or(b"null"));
    out.extend_from_slice(b",\"source_event_id\":");
    out.extend_from_slice(id.unwrap_or(b"null"));
    out.extend_from_slice(b",\"source_event_type\":");
    json::write_string(out, EVENT_TYPE);
    out.extend_from_slice(b"}}");
    Ok(())
}

#[no_mangle]
pub unsafe extern "C" fn init(ptr: i32, len: i32, _version: i32) -> i32 {
    let input = abi::take_input(ptr, len);
    let params = match abi::parse_init(&input) {
        Some(p) => p,
        None => return abi::INIT_DECODING_INPUT,
    };
    let mut memory_type = None;
    for (name, value) in &params {
        match name.as_str() {
            "memory_type" if !value.trim().is_empty() => memory_type = Some(value.trim().to_string()),
            "memory_type" => {
                return abi::init_error("data-transform: param memory_type must not be empty")
            }
            _ => {
                let hint = abi::unknown_param(name, "memory_type");
                return abi::init_error(&format!("data-transform: {}", hint));
            }
        }
    }
    MEMORY_TYPE = memory_type;
    0
}

#[no_mangle]
pub unsafe extern "C" fn map(ptr: i32, len: i32, version: i32) -> i32 {
    let buf = abi::take_input(ptr, len);
    let input = match abi::parse_input(&buf, version, false) {
        Some(i) => i,
        None => return abi::ERR_DECODING_BASE_INPUT,
    };
    let records = match abi::records(input.records) {
        Some(r) => r,
        None => return abi::ERR_DECODING_BASE_INPUT,
    };
    let mut out = abi::Output::new(input.records.len() * 2);
    let mut value = Vec::new();
    for record in records {
        let record = match record {
            Some(r) => r,
            None => return abi::ERR_DECODING_BASE_INPUT,
        };
        value.clear();
        let timestamp = input.base_timestamp + record.timestamp_delta;
        if let Err(hint) = transform(record.value, timestamp, &mut value) {
            let hint = format!("data-transform: {}", hint);
            let error = abi::RuntimeError::new(&input, &record, abi::KIND_MAP, hint);
            return out.send(Some(error), None);
        }
        out.push(record.attributes, record.timestamp_delta, record.offset_delta, record.key, &value);
    }
    out.send(None, None)
}
