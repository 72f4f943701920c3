//! A small JSON scanner for record values, shared by the project's SmartModules.
//!
//! It validates a document (RFC 8259, UTF-8) without building a tree, then answers
//! lookups on byte spans of the original text: the value of a member of an object,
//! a string with its escapes decoded, a number. Nested values that a module passes on
//! unchanged are copied as spans, so they keep their exact text. Containers are walked
//! with an explicit stack, so deep nesting cannot overflow the wasm call stack.

#![allow(dead_code)]

/// Nesting deeper than this is rejected as not being an event.
const MAX_DEPTH: usize = 512;

fn ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

fn skip_string(s: &[u8], mut i: usize) -> Option<usize> {
    if s.get(i) != Some(&b'"') {
        return None;
    }
    i += 1;
    loop {
        // Plain characters first, without the per-byte dispatch below.
        while i < s.len() && s[i] != b'"' && s[i] != b'\\' && s[i] >= 0x20 {
            i += 1;
        }
        match *s.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => {
                match *s.get(i + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                    b'u' => {
                        let hex = s.get(i + 2..i + 6)?;
                        if !hex.iter().all(|c| c.is_ascii_hexdigit()) {
                            return None;
                        }
                        i += 6;
                    }
                    _ => return None,
                }
            }
            c if c < 0x20 => return None,
            _ => i += 1,
        }
    }
}

fn skip_digits(s: &[u8], mut i: usize) -> (usize, bool) {
    let start = i;
    while i < s.len() && s[i].is_ascii_digit() {
        i += 1;
    }
    (i, i > start)
}

fn skip_number(s: &[u8], mut i: usize) -> Option<usize> {
    if s.get(i) == Some(&b'-') {
        i += 1;
    }
    match *s.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i = skip_digits(s, i).0,
        _ => return None,
    }
    if s.get(i) == Some(&b'.') {
        let (j, any) = skip_digits(s, i + 1);
        if !any {
            return None;
        }
        i = j;
    }
    if matches!(s.get(i), Some(b'e') | Some(b'E')) {
        i += 1;
        if matches!(s.get(i), Some(b'+') | Some(b'-')) {
            i += 1;
        }
        let (j, any) = skip_digits(s, i);
        if !any {
            return None;
        }
        i = j;
    }
    Some(i)
}

fn skip_literal(s: &[u8], i: usize, lit: &[u8]) -> Option<usize> {
    if s.get(i..i + lit.len())? == lit {
        Some(i + lit.len())
    } else {
        None
    }
}

/// Skips an object key and its colon; returns the position of the member's value.
fn skip_key(s: &[u8], i: usize) -> Option<usize> {
    after_key(s, skip_string(s, ws(s, i))?)
}

/// From the end of a key: the colon, then the position of the member's value.
fn after_key(s: &[u8], key_end: usize) -> Option<usize> {
    let i = ws(s, key_end);
    if s.get(i) != Some(&b':') {
        return None;
    }
    Some(ws(s, i + 1))
}

fn skip_scalar(s: &[u8], i: usize) -> Option<usize> {
    match *s.get(i)? {
        b'"' => skip_string(s, i),
        b't' => skip_literal(s, i, b"true"),
        b'f' => skip_literal(s, i, b"false"),
        b'n' => skip_literal(s, i, b"null"),
        _ => skip_number(s, i),
    }
}

/// Validates the value starting at `i` (after optional whitespace) and returns the
/// position just past it.
pub fn skip_value(s: &[u8], i: usize) -> Option<usize> {
    let mut i = ws(s, i);
    let first = *s.get(i)?;
    if first != b'{' && first != b'[' {
        return skip_scalar(s, i);
    }
    // Open containers as a bit stack (1: object, 0: array): no allocation per value.
    let mut stack = [0u64; MAX_DEPTH / 64];
    let mut depth = 0usize;
    loop {
        // A value starts here.
        match *s.get(i)? {
            c @ (b'{' | b'[') => {
                let object = c == b'{';
                let close = if object { b'}' } else { b']' };
                i = ws(s, i + 1);
                if s.get(i) == Some(&close) {
                    i += 1;
                } else {
                    if depth == MAX_DEPTH {
                        return None;
                    }
                    let (word, bit) = (depth / 64, 1u64 << (depth % 64));
                    if object {
                        stack[word] |= bit;
                        i = skip_key(s, i)?;
                    } else {
                        stack[word] &= !bit;
                    }
                    depth += 1;
                    continue;
                }
            }
            _ => i = skip_scalar(s, i)?,
        }
        // A value ended: close containers until one continues with a comma.
        loop {
            if depth == 0 {
                return Some(i);
            }
            let top = depth - 1;
            let object = stack[top / 64] & (1u64 << (top % 64)) != 0;
            i = ws(s, i);
            let c = *s.get(i)?;
            if c == b',' {
                i = ws(s, i + 1);
                if object {
                    i = skip_key(s, i)?;
                }
                break;
            } else if c == if object { b'}' } else { b']' } {
                depth -= 1;
                i += 1;
            } else {
                return None;
            }
        }
    }
}

/// The span of a whole document if it is valid UTF-8 JSON whose top level is an object.
pub fn parse_object(doc: &[u8]) -> Option<&[u8]> {
    document_fields(doc, []).map(|(obj, _)| obj)
}

/// Validates a whole document whose top level must be an object and, in the same
/// pass, finds the values of the given members (first occurrence of each). A key may
/// be a dotted path into nested objects (`"payload.importance"`).
pub fn document_fields<'a, const N: usize>(
    doc: &'a [u8],
    keys: [&str; N],
) -> Option<(&'a [u8], [Option<&'a [u8]>; N])> {
    std::str::from_utf8(doc).ok()?;
    let start = ws(doc, 0);
    let mut found: [Option<&'a [u8]>; N] = [None; N];
    let end = walk(doc, start, &keys, &mut found, "")?;
    if ws(doc, end) != doc.len() {
        return None;
    }
    Some((&doc[start..end], found))
}

/// The values of the given members (or dotted paths) of the object span `obj`,
/// validated on the way.
pub fn fields<'a, const N: usize>(obj: &'a [u8], keys: [&str; N]) -> Option<[Option<&'a [u8]>; N]> {
    let mut found: [Option<&'a [u8]>; N] = [None; N];
    walk(obj, 0, &keys, &mut found, "")?;
    Some(found)
}

/// Walks the members of the object at `i` once, validating every value, and fills
/// `found` for the keys that start with `prefix` (the path of this object, like
/// `"payload."`) and go on with a member here or inside one of its objects. Returns
/// the position after the object.
fn walk<'a, 'k>(
    s: &'a [u8],
    i: usize,
    keys: &[&'k str],
    found: &mut [Option<&'a [u8]>],
    prefix: &'k str,
) -> Option<usize> {
    if s.get(i) != Some(&b'{') {
        return None;
    }
    let mut i = ws(s, i + 1);
    if s.get(i) == Some(&b'}') {
        return Some(i + 1);
    }
    loop {
        let key_end = skip_string(s, i)?;
        let raw_key = &s[i..key_end];
        let value_start = after_key(s, key_end)?;
        // A wanted path continuing below this member, when its value is an object:
        // walk into it instead of skipping it, so nothing is scanned twice.
        let mut nested = None;
        if s.get(value_start) == Some(&b'{') {
            let name = &raw_key[1..raw_key.len() - 1];
            for (k, slot) in keys.iter().zip(found.iter()) {
                if slot.is_none() && k.starts_with(prefix) {
                    let rest = &k.as_bytes()[prefix.len()..];
                    if rest.len() > name.len()
                        && rest.starts_with(name)
                        && rest[name.len()] == b'.'
                        && !name.contains(&b'\\')
                    {
                        nested = Some(&k[..prefix.len() + name.len() + 1]);
                        break;
                    }
                }
            }
        }
        let value_end = match nested {
            Some(inner) => walk(s, value_start, keys, found, inner)?,
            None => skip_value(s, value_start)?,
        };
        for (k, slot) in keys.iter().zip(found.iter_mut()) {
            if slot.is_none() && k.starts_with(prefix) && key_equals(raw_key, &k[prefix.len()..]) {
                *slot = Some(&s[value_start..value_end]);
            }
        }
        i = ws(s, value_end);
        match s.get(i) {
            Some(b',') => i = ws(s, i + 1),
            Some(b'}') => return Some(i + 1),
            _ => return None,
        }
    }
}

/// The value of member `key` of the object span `obj` (the first one, if repeated).
pub fn get<'a>(obj: &'a [u8], key: &str) -> Option<&'a [u8]> {
    fields(obj, [key])?[0]
}

/// Looks up a path of member names through nested objects.
pub fn get_path<'a>(obj: &'a [u8], path: &[&str]) -> Option<&'a [u8]> {
    let mut cur = obj;
    for key in path {
        cur = get(cur, key)?;
    }
    Some(cur)
}

/// Whether the JSON string span `raw` (quotes included) decodes to `text`; compares
/// the bytes directly unless the span holds escapes.
pub fn string_equals(raw: &[u8], text: &str) -> bool {
    raw.len() >= 2 && raw[0] == b'"' && key_equals(raw, text)
}

fn key_equals(raw: &[u8], key: &str) -> bool {
    // Most keys carry no escapes: compare the bytes between the quotes directly.
    let inner = &raw[1..raw.len() - 1];
    if inner == key.as_bytes() {
        return true;
    }
    if !inner.contains(&b'\\') {
        return false;
    }
    match string(raw) {
        Some(s) => s == key,
        None => false,
    }
}

fn hex4(h: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(h).ok()?;
    u32::from_str_radix(s, 16).ok()
}

/// Decodes a JSON string span (quotes included); `None` if the span is not a string.
/// Lone surrogates become U+FFFD.
pub fn string(span: &[u8]) -> Option<String> {
    if span.len() < 2 || span[0] != b'"' || span[span.len() - 1] != b'"' {
        return None;
    }
    let inner = &span[1..span.len() - 1];
    let mut out: Vec<u8> = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        let c = inner[i];
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let e = *inner.get(i + 1)?;
        i += 2;
        let decoded = match e {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = hex4(inner.get(i..i + 4)?)?;
                i += 4;
                let mut code = hi;
                if (0xD800..0xDC00).contains(&hi) && inner.get(i..i + 2) == Some(b"\\u") {
                    if let Some(lo) = inner.get(i + 2..i + 6).and_then(hex4) {
                        if (0xDC00..0xE000).contains(&lo) {
                            code = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                            i += 6;
                        }
                    }
                }
                char::from_u32(code).unwrap_or('\u{FFFD}')
            }
            _ => return None,
        };
        let mut tmp = [0u8; 4];
        out.extend_from_slice(decoded.encode_utf8(&mut tmp).as_bytes());
    }
    String::from_utf8(out).ok()
}

/// A JSON number span as f64; `None` for other values and for non-finite results.
pub fn number(span: &[u8]) -> Option<f64> {
    let first = *span.first()?;
    if first != b'-' && !first.is_ascii_digit() {
        return None;
    }
    let x: f64 = std::str::from_utf8(span).ok()?.parse().ok()?;
    if x.is_finite() {
        Some(x)
    } else {
        None
    }
}

/// A JSON array of strings, e.g. a list param sent as `["a","b"]`.
pub fn string_array(doc: &[u8]) -> Option<Vec<String>> {
    std::str::from_utf8(doc).ok()?;
    let start = ws(doc, 0);
    if doc.get(start) != Some(&b'[') {
        return None;
    }
    let end = skip_value(doc, start)?;
    if ws(doc, end) != doc.len() {
        return None;
    }
    let mut out = Vec::new();
    let mut i = ws(doc, start + 1);
    if doc.get(i) == Some(&b']') {
        return Some(out);
    }
    loop {
        let item_end = skip_value(doc, i)?;
        out.push(string(&doc[i..item_end])?);
        i = ws(doc, item_end);
        if doc.get(i) != Some(&b',') {
            return Some(out);
        }
        i = ws(doc, i + 1);
    }
}

/// Appends `s` as a JSON string literal.
pub fn write_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            c if c < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(c >> 4) as usize]);
                out.push(HEX[(c & 15) as usize]);
            }
            c => out.push(c),
        }
    }
    out.push(b'"');
}

/// Appends a finite f64 as a JSON number (Rust's shortest round-trip form).
pub fn write_number(out: &mut Vec<u8>, x: f64) {
    let x = if x.is_finite() { x } else { 0.0 };
    out.extend_from_slice(format!("{}", x).as_bytes());
}

/// Whether a span is a JSON string (validated documents only).
pub fn is_string(span: &[u8]) -> bool {
    span.first() == Some(&b'"')
}
