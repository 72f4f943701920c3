//! event-aggregate: keeps running statistics over event envelopes.
//!
//! The accumulator is JSON: `{"event_count": int, "total_importance": number,
//! "last_event": {"id", "type", "timestamp"} or null}`; start with an empty one (or
//! any earlier state). Each event adds 1 to `event_count` and its `payload.importance`
//! (0.5 when missing) to `total_importance`, and becomes `last_event`. Every input
//! record is emitted with its value replaced by the state after it, key and offset kept.
//! Values that are not a JSON object leave the state unchanged.
//!
//! No params.

#[path = "../../common/abi.rs"]
mod abi;
#[path = "../../common/json.rs"]
mod json;

const MISSING_IMPORTANCE: f64 = 0.5;

struct State {
    event_count: u64,
    total_importance: f64,
    /// The JSON text of `last_event`.
    last_event: Vec<u8>,
}

impl State {
    fn parse(acc: &[u8]) -> Option<State> {
        let mut state = State { event_count: 0, total_importance: 0.0, last_event: b"null".to_vec() };
        if acc.iter().all(|b| b.is_ascii_whitespace()) {
            return Some(state);
        }
        let obj = json::parse_object(acc)?;
        if let Some(n) = json::get(obj, "event_count") {
            let n = json::number(n)?;
            if n < 0.0 || n.fract() != 0.0 {
                return None;
            }
            state.event_count = n as u64;
        }
        if let Some(t) = json::get(obj, "total_importance") {
            state.total_importance = json::number(t)?;
        }
        if let Some(e) = json::get(obj, "last_event") {
            state.last_event = e.to_vec();
        }
        Some(state)
    }

    fn add(&mut self, value: &[u8]) {
        let keys = ["id", "type", "timestamp", "payload.importance"];
        let (_, [id, event_type, timestamp, importance]) = match json::document_fields(value, keys)
        {
            Some(found) => found,
            None => return,
        };
        let importance = importance
            .and_then(json::number)
            .unwrap_or(MISSING_IMPORTANCE);
        self.event_count += 1;
        self.total_importance += importance;
        let e = &mut self.last_event;
        e.clear();
        e.extend_from_slice(b"{\"id\":");
        e.extend_from_slice(id.unwrap_or(b"null"));
        e.extend_from_slice(b",\"type\":");
        e.extend_from_slice(event_type.unwrap_or(b"null"));
        e.extend_from_slice(b",\"timestamp\":");
        e.extend_from_slice(timestamp.unwrap_or(b"null"));
        e.push(b'}');
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"event_count\":");
        out.extend_from_slice(self.event_count.to_string().as_bytes());
        out.extend_from_slice(b",\"total_importance\":");
        json::write_number(out, self.total_importance);
        out.extend_from_slice(b",\"last_event\":");
        out.extend_from_slice(&self.last_event);
        out.push(b'}');
    }
}

#[no_mangle]
pub unsafe extern "C" fn init(ptr: i32, len: i32, _version: i32) -> i32 {
    let input = abi::take_input(ptr, len);
    match abi::parse_init(&input) {
        None => abi::INIT_DECODING_INPUT,
        Some(params) => match params.first() {
            None => 0,
            Some((name, _)) => {
                abi::init_error(&format!("event-aggregate: param '{}' is not accepted: this module takes no params", name))
            }
        },
    }
}

#[no_mangle]
pub unsafe extern "C" fn aggregate(ptr: i32, len: i32, version: i32) -> i32 {
    let buf = abi::take_input(ptr, len);
    let input = match abi::parse_input(&buf, version, true) {
        Some(i) => i,
        None => return abi::ERR_DECODING_BASE_INPUT,
    };
    let records = match abi::records(input.records) {
        Some(r) => r,
        None => return abi::ERR_DECODING_RECORDS,
    };
    let mut out = abi::Output::new(input.records.len() + 256);
    let mut state = None;
    let mut acc = input.accumulator.to_vec();
    for record in records {
        let record = match record {
            Some(r) => r,
            None => return abi::ERR_DECODING_RECORDS,
        };
        if state.is_none() {
            state = State::parse(input.accumulator);
            if state.is_none() {
                let hint = "event-aggregate: the accumulator is not event-aggregate state JSON; \
                            start from an empty accumulator"
                    .to_string();
                let error = abi::RuntimeError::new(&input, &record, abi::KIND_AGGREGATE, hint);
                return out.send(Some(error), Some(input.accumulator));
            }
        }
        let s = state.as_mut().unwrap();
        s.add(record.value);
        acc.clear();
        s.write(&mut acc);
        out.push(record.attributes, record.timestamp_delta, record.offset_delta, record.key, &acc);
    }
    out.send(None, Some(&acc))
}
