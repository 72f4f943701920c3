//! The Fluvio SmartModule calling convention, shared by the project's SmartModules.
//!
//! This file owns everything a module exchanges with its host (a Fluvio SPU or the
//! gateway's engine): the `alloc`/`dealloc` exports, the `env.copy_records` import,
//! decoding the `SmartModuleInput` for every `version` a host may pass, walking the
//! records block, and encoding `SmartModuleOutput`, runtime errors and init errors.
//! It uses no external crate so that it builds without network access.

#![allow(dead_code)]

use std::mem;

#[link(wasm_import_module = "env")]
extern "C" {
    fn copy_records(ptr: i32, len: i32);
}

/// The last output handed to the host. Keeping it here (instead of leaking it) means a
/// host that never frees outputs, like the Fluvio SPU, does not make memory grow: the
/// buffer is released when the next output replaces it.
static mut OUTPUT: Vec<u8> = Vec::new();

/// Return codes of the transform exports (`SmartModuleTransformErrorStatus`).
pub const ERR_DECODING_BASE_INPUT: i32 = -11;
pub const ERR_DECODING_RECORDS: i32 = -22;
pub const ERR_ENCODING_OUTPUT: i32 = -33;
/// Return codes of `init` (`SmartModuleInitErrorStatus`).
pub const INIT_ERROR: i32 = -2;
pub const INIT_DECODING_INPUT: i32 = -10;

/// `SmartModuleKind` tags used inside a runtime error.
pub const KIND_FILTER: u8 = 0;
pub const KIND_MAP: u8 = 1;
pub const KIND_ARRAY_MAP: u8 = 2;
pub const KIND_AGGREGATE: u8 = 3;
pub const KIND_FILTER_MAP: u8 = 4;

#[no_mangle]
pub extern "C" fn alloc(len: i32) -> i32 {
    let mut buf: Vec<u8> = Vec::with_capacity(len.max(0) as usize);
    let ptr = buf.as_mut_ptr();
    mem::forget(buf);
    ptr as i32
}

/// Frees the output buffer once the host has copied it. Any other pointer is ignored:
/// input buffers belong to the transform that received them, and freeing memory the
/// module does not know would corrupt its heap.
#[no_mangle]
pub unsafe extern "C" fn dealloc(ptr: i32, _len: i32) {
    if OUTPUT.capacity() > 0 && OUTPUT.as_ptr() as i32 == ptr {
        OUTPUT = Vec::new();
    }
}

/// Hands `buf` to the host through `copy_records`.
pub fn send(buf: Vec<u8>) {
    unsafe {
        OUTPUT = buf;
        copy_records(OUTPUT.as_ptr() as i32, OUTPUT.len() as i32);
    }
}

/// Takes ownership of the input buffer the host wrote at `ptr` (allocated by `alloc`).
pub unsafe fn take_input(ptr: i32, len: i32) -> Vec<u8> {
    let len = len.max(0) as usize;
    Vec::from_raw_parts(ptr as *mut u8, len, len)
}

// -- primitive decoding --------------------------------------------------------------

pub struct Reader<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    pub fn u8(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    pub fn u16(&mut self) -> Option<u16> {
        let b = self.bytes(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Option<u32> {
        let b = self.bytes(4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn i64(&mut self) -> Option<i64> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Some(i64::from_be_bytes(a))
    }

    /// A zigzag varint, low 7-bit group first.
    pub fn varint(&mut self) -> Option<i64> {
        let mut value: u64 = 0;
        let mut shift = 0u32;
        loop {
            let b = self.u8()?;
            if shift >= 64 {
                return None;
            }
            value |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        Some(((value >> 1) as i64) ^ -((value & 1) as i64))
    }

    /// A `String`: u16 length read as i16 (zero or negative means empty), then UTF-8.
    pub fn string(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()? as i16;
        if n <= 0 {
            return Some(&[]);
        }
        self.bytes(n as usize)
    }

    /// A `Vec<u8>`: u32 length read as i32 (below one means empty), then the bytes.
    pub fn byte_vec(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as i32;
        if n <= 0 {
            return Some(&[]);
        }
        self.bytes(n as usize)
    }

    fn lookback(&mut self, version: i32) -> Option<()> {
        if version >= 20 && self.u8()? == 1 {
            self.bytes(8)?; // last
            if version >= 21 && self.u8()? == 1 {
                self.bytes(12)?; // age: u64 seconds + u32 nanoseconds
            }
        }
        Some(())
    }
}

// -- inputs --------------------------------------------------------------------------

pub struct Input<'a> {
    pub base_offset: i64,
    pub base_timestamp: i64,
    /// The records block: u32 count, then the records.
    pub records: &'a [u8],
    /// Only for aggregate.
    pub accumulator: &'a [u8],
}

/// Decodes a `SmartModuleInput` (and the accumulator of `SmartModuleAggregateInput`)
/// in the layout of `version`: 23 and later carry only offsets, records and timestamp;
/// 22 and earlier also carry a deprecated params map, a look-back option and a join
/// record, which hosts always send empty.
pub fn parse_input(buf: &[u8], version: i32, aggregate: bool) -> Option<Input<'_>> {
    let mut r = Reader::new(buf);
    let base_offset = r.i64()?;
    let records = r.byte_vec()?;
    if version <= 22 {
        let n = r.u16()?;
        for _ in 0..n {
            r.string()?;
            r.string()?;
        }
        r.lookback(version)?;
        if version >= 16 {
            r.byte_vec()?;
        }
    }
    let base_timestamp = if version >= 22 { r.i64()? } else { 0 };
    let accumulator = if aggregate { r.byte_vec()? } else { &[] };
    Some(Input { base_offset, base_timestamp, records, accumulator })
}

/// Decodes `SmartModuleInitInput` into its params, in the order sent (sorted by key).
pub fn parse_init(buf: &[u8]) -> Option<Vec<(String, String)>> {
    let mut r = Reader::new(buf);
    let n = r.u16()?;
    let mut params = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let k = String::from_utf8(r.string()?.to_vec()).ok()?;
        let v = String::from_utf8(r.string()?.to_vec()).ok()?;
        params.push((k, v));
    }
    Some(params)
}

// -- records -------------------------------------------------------------------------

pub struct RecordRef<'a> {
    /// The whole encoded record, length prefix included: a filter copies it verbatim.
    pub raw: &'a [u8],
    pub attributes: u8,
    pub timestamp_delta: i64,
    pub offset_delta: i64,
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
}

pub struct Records<'a> {
    reader: Reader<'a>,
    left: u32,
}

/// Iterates a records block; yields `None` items when a record is malformed.
pub fn records(block: &[u8]) -> Option<Records<'_>> {
    let mut reader = Reader::new(block);
    let count = reader.u32()? as i32;
    Some(Records { reader, left: count.max(0) as u32 })
}

impl<'a> Iterator for Records<'a> {
    type Item = Option<RecordRef<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let record = self.read();
        if record.is_none() {
            self.left = 0;
        }
        Some(record)
    }
}

impl<'a> Records<'a> {
    fn read(&mut self) -> Option<RecordRef<'a>> {
        let r = &mut self.reader;
        let start = r.pos;
        r.varint()?; // length: fields are read in order, as Fluvio's decoder does
        let attributes = r.u8()?;
        let timestamp_delta = r.varint()?;
        let offset_delta = r.varint()?;
        let key = match r.u8()? {
            0 => None,
            1 => {
                let n = r.varint()?;
                Some(r.bytes(usize_of(n)?)?)
            }
            _ => return None,
        };
        let n = r.varint()?;
        let value = r.bytes(usize_of(n)?)?;
        if r.varint()? != 0 {
            return None; // record headers have no payload format
        }
        Some(RecordRef {
            raw: &r.buf[start..r.pos],
            attributes,
            timestamp_delta,
            offset_delta,
            key,
            value,
        })
    }
}

fn usize_of(n: i64) -> Option<usize> {
    if n < 0 {
        None
    } else {
        Some(n as usize)
    }
}

// -- outputs -------------------------------------------------------------------------

pub fn put_varint(out: &mut Vec<u8>, n: i64) {
    let mut u = ((n << 1) ^ (n >> 63)) as u64;
    while u >= 0x80 {
        out.push((u as u8) | 0x80);
        u >>= 7;
    }
    out.push(u as u8);
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    // Hosts read the u16 length as i16: keep it under 32 KiB, on a char boundary.
    let mut end = s.len().min(32767);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..end]);
}

fn put_record_data(out: &mut Vec<u8>, data: &[u8]) {
    put_varint(out, data.len() as i64);
    out.extend_from_slice(data);
}

/// A record that failed, reported as `SmartModuleTransformRuntimeError`.
pub struct RuntimeError {
    pub hint: String,
    pub offset: i64,
    pub kind: u8,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
}

impl RuntimeError {
    pub fn new(input: &Input, record: &RecordRef, kind: u8, hint: String) -> Self {
        RuntimeError {
            hint,
            offset: input.base_offset + record.offset_delta,
            kind,
            key: record.key.map(|k| k.to_vec()),
            value: record.value.to_vec(),
        }
    }
}

/// Builds a `SmartModuleOutput`: the successes, then an optional runtime error.
pub struct Output {
    buf: Vec<u8>,
    count: u32,
    scratch: Vec<u8>,
}

impl Output {
    pub fn new(capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity + 16);
        buf.extend_from_slice(&[0, 0, 0, 0]);
        Output { buf, count: 0, scratch: Vec::new() }
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// Appends an input record unchanged (filter).
    pub fn push_raw(&mut self, raw: &[u8]) {
        self.buf.extend_from_slice(raw);
        self.count += 1;
    }

    /// Appends a new record; `value` is written by the closure to avoid a copy.
    pub fn push_with<F: FnOnce(&mut Vec<u8>)>(
        &mut self,
        attributes: u8,
        timestamp_delta: i64,
        offset_delta: i64,
        key: Option<&[u8]>,
        value: F,
    ) {
        let s = &mut self.scratch;
        s.clear();
        s.push(attributes);
        put_varint(s, timestamp_delta);
        put_varint(s, offset_delta);
        match key {
            None => s.push(0),
            Some(k) => {
                s.push(1);
                put_record_data(s, k);
            }
        }
        let mut v = Vec::new();
        value(&mut v);
        put_record_data(s, &v);
        s.push(0); // no headers
        put_varint(&mut self.buf, s.len() as i64);
        self.buf.extend_from_slice(s);
        self.count += 1;
    }

    pub fn push(
        &mut self,
        attributes: u8,
        timestamp_delta: i64,
        offset_delta: i64,
        key: Option<&[u8]>,
        value: &[u8],
    ) {
        self.push_with(attributes, timestamp_delta, offset_delta, key, |v| {
            v.extend_from_slice(value)
        });
    }

    /// Finishes the output (plus the accumulator for aggregate), sends it to the host
    /// and returns the transform's result: the number of records.
    pub fn send(mut self, error: Option<RuntimeError>, accumulator: Option<&[u8]>) -> i32 {
        let count = self.count;
        self.buf[..4].copy_from_slice(&count.to_be_bytes());
        match error {
            None => self.buf.push(0),
            Some(e) => {
                self.buf.push(1);
                put_string(&mut self.buf, &e.hint);
                self.buf.extend_from_slice(&e.offset.to_be_bytes());
                self.buf.push(e.kind);
                match e.key {
                    None => self.buf.push(0),
                    Some(k) => {
                        self.buf.push(1);
                        put_record_data(&mut self.buf, &k);
                    }
                }
                put_record_data(&mut self.buf, &e.value);
            }
        }
        if let Some(acc) = accumulator {
            self.buf.extend_from_slice(&(acc.len() as u32).to_be_bytes());
            self.buf.extend_from_slice(acc);
        }
        let mut buf = self.buf;
        buf.shrink_to_fit();
        send(buf);
        count as i32
    }
}

/// Reports an init failure (`SmartModuleInitOutput`) and returns the code for it.
pub fn init_error(hint: &str) -> i32 {
    let mut buf = Vec::with_capacity(hint.len() + 2);
    put_string(&mut buf, hint);
    send(buf);
    INIT_ERROR
}

// -- params --------------------------------------------------------------------------

/// A list param: a JSON array of strings (what Fluvio's transformation files send for
/// a YAML list) or a comma-separated string. Empty items are dropped.
pub fn parse_list(value: &str) -> Option<Vec<String>> {
    let t = value.trim();
    if t.starts_with('[') {
        return crate::json::string_array(t.as_bytes());
    }
    Some(
        t.split(',')
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(|s| s.to_string())
            .collect(),
    )
}

/// An importance threshold: a finite number between 0 and 1.
pub fn parse_importance(name: &str, value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!("param {} must be a number between 0 and 1, got '{}'", name, value)),
    }
}

pub fn unknown_param(name: &str, accepted: &str) -> String {
    format!("unknown param '{}'; accepted params: {}", name, accepted)
}
