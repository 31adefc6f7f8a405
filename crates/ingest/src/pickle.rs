//! A pickle reader that never executes pickle code.
//!
//! Pickle is a small stack machine whose `GLOBAL` + `REDUCE` opcodes call arbitrary Python
//! functions. This reader runs only the opcodes that plain values (None, bools, numbers,
//! strings, bytes, lists, tuples, dicts) need, and recognises a short whitelist of NumPy
//! reconstructors as *data*: it never calls anything. Any other global (`os.system`,
//! `builtins.eval`, a user class) is refused with an error naming it.
//!
//! Handles protocols 0-5 as written by Python 2 and 3 and by NumPy 1.x and 2.x
//! (`numpy.core.multiarray._reconstruct` + `BUILD`, `numpy.core.numeric._frombuffer` for
//! protocol 5, `_codecs.encode` for bytes under protocol 2).

use std::collections::HashMap;

use thiserror::Error;

/// A decoded value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Array(NdArray),
    /// A NumPy dtype, e.g. `u1` with byte order `<`.
    Dtype(String),
    /// A whitelisted callable, not yet applied.
    Global(Callable),
    /// `_reconstruct(ndarray, ...)` before its `BUILD` state arrives.
    EmptyArray,
}

/// The only callables this reader understands; applying them builds data, runs nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Callable {
    Reconstruct,
    NdarrayClass,
    Dtype,
    FromBuffer,
    Scalar,
    CodecsEncode,
}

/// A NumPy array: element type (`u1`, `<i8`, `<f4`, ...), shape and raw little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct NdArray {
    pub dtype: String,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
    pub fortran: bool,
}

impl NdArray {
    /// Element size and kind (`u`, `i`, `f`, `b`) of the dtype.
    fn kind(&self) -> Result<(char, usize, bool), PickleError> {
        dtype_parts(&self.dtype)
    }

    /// The values as i64 (integer, bool or integral float arrays).
    pub fn to_i64(&self) -> Result<Vec<i64>, PickleError> {
        let (kind, size, big) = self.kind()?;
        let chunks = self.data.chunks_exact(size);
        let v = match (kind, size) {
            ('u', 1) | ('b', 1) => chunks.map(|c| c[0] as i64).collect(),
            ('i', 1) => chunks.map(|c| c[0] as i8 as i64).collect(),
            ('u', 2) => chunks.map(|c| rd::<2>(c, big) as i64).collect(),
            ('i', 2) => chunks.map(|c| rd::<2>(c, big) as i16 as i64).collect(),
            ('u', 4) => chunks.map(|c| rd::<4>(c, big) as i64).collect(),
            ('i', 4) => chunks.map(|c| rd::<4>(c, big) as i32 as i64).collect(),
            ('u', 8) | ('i', 8) => chunks.map(|c| rd::<8>(c, big) as i64).collect(),
            ('f', 4) => chunks
                .map(|c| f32::from_bits(rd::<4>(c, big) as u32) as f64 as i64)
                .collect(),
            ('f', 8) => chunks
                .map(|c| f64::from_bits(rd::<8>(c, big)) as i64)
                .collect(),
            _ => {
                return Err(PickleError::Unsupported(format!(
                    "dtype `{}` as labels",
                    self.dtype
                )))
            }
        };
        Ok(v)
    }

    /// The values as f64 (float arrays exactly; integer arrays converted).
    pub fn to_f64(&self) -> Result<Vec<f64>, PickleError> {
        let (kind, size, big) = self.kind()?;
        Ok(match (kind, size) {
            ('f', 4) => self
                .data
                .chunks_exact(4)
                .map(|c| f32::from_bits(rd::<4>(c, big) as u32) as f64)
                .collect(),
            ('f', 8) => self
                .data
                .chunks_exact(8)
                .map(|c| f64::from_bits(rd::<8>(c, big)))
                .collect(),
            _ => self.to_i64()?.into_iter().map(|v| v as f64).collect(),
        })
    }

    /// Pixels as u8: u8 arrays as they are; floats in [0, 1] scaled by 255, floats in
    /// [0, 255] rounded; wider integers must already be within 0..=255.
    pub fn to_u8(&self) -> Result<Vec<u8>, PickleError> {
        let (kind, size, _) = self.kind()?;
        if kind == 'u' && size == 1 {
            return Ok(self.data.clone());
        }
        let vals = self.to_f64()?;
        pixels_from_values(&vals, kind == 'f')
            .map_err(|e| PickleError::Unsupported(format!("dtype `{}`: {e}", self.dtype)))
    }
}

/// Pixel values of any numeric type as u8: floats within [0, 1] are scaled by 255, values
/// within [0, 255] are rounded; anything else (negative, above 255, NaN) is refused.
pub fn pixels_from_values(vals: &[f64], is_float: bool) -> Result<Vec<u8>, String> {
    let max = vals.iter().copied().fold(f64::MIN, f64::max);
    let min = vals.iter().copied().fold(f64::MAX, f64::min);
    if vals.iter().any(|v| !v.is_finite()) || min < 0.0 || max > 255.0 {
        return Err(format!(
            "pixel values range over [{min}, {max}], not [0, 1] or [0, 255]"
        ));
    }
    let scale = if is_float && max <= 1.0 { 255.0 } else { 1.0 };
    Ok(vals.iter().map(|v| (v * scale).round() as u8).collect())
}

fn rd<const N: usize>(c: &[u8], big: bool) -> u64 {
    let mut b = [0u8; 8];
    if big {
        for i in 0..N {
            b[i] = c[N - 1 - i];
        }
    } else {
        b[..N].copy_from_slice(&c[..N]);
    }
    u64::from_le_bytes(b)
}

/// `(kind, size, big_endian)` of a NumPy dtype string like `<i8`, `|u1`, `u1`, `>f4`.
pub fn dtype_parts(d: &str) -> Result<(char, usize, bool), PickleError> {
    let (big, rest) = match d.chars().next() {
        Some('>') => (true, &d[1..]),
        Some('<') | Some('|') | Some('=') => (false, &d[1..]),
        _ => (false, d),
    };
    let mut chars = rest.chars();
    let kind = chars
        .next()
        .ok_or_else(|| PickleError::Unsupported(format!("dtype `{d}`")))?;
    let size: usize = chars
        .as_str()
        .parse()
        .map_err(|_| PickleError::Unsupported(format!("dtype `{d}`")))?;
    if !matches!(kind, 'u' | 'i' | 'f' | 'b') || !matches!(size, 1 | 2 | 4 | 8) {
        return Err(PickleError::Unsupported(format!("dtype `{d}`")));
    }
    Ok((kind, size, big))
}

#[derive(Debug, Error, PartialEq)]
pub enum PickleError {
    #[error("pickle ends early at byte {0}")]
    Truncated(usize),
    #[error("pickle opcode 0x{op:02x} at byte {pos} is not one that plain dicts and NumPy arrays use; refusing to load it")]
    Opcode { op: u8, pos: usize },
    #[error("pickle refers to `{0}`, which is not a plain value or NumPy array; refusing to load it (rebalance never runs pickle code)")]
    Global(String),
    #[error("malformed pickle at byte {pos}: {what}")]
    Malformed { pos: usize, what: String },
    #[error("unsupported pickle content: {0}")]
    Unsupported(String),
}

struct Machine<'a> {
    b: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<usize, Value>,
}

/// Decode a pickle without executing it.
pub fn load(bytes: &[u8]) -> Result<Value, PickleError> {
    let mut m = Machine {
        b: bytes,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    };
    m.run()
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or(PickleError::Truncated(self.pos))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }
    fn le(&mut self, n: usize) -> Result<u64, PickleError> {
        let s = self.take(n)?;
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(s);
        Ok(u64::from_le_bytes(b))
    }
    fn line(&mut self) -> Result<&'a str, PickleError> {
        let start = self.pos;
        let rel = self.b[start..]
            .iter()
            .position(|&c| c == b'\n')
            .ok_or(PickleError::Truncated(start))?;
        self.pos = start + rel + 1;
        std::str::from_utf8(&self.b[start..start + rel])
            .map_err(|_| self.bad("text line is not UTF-8"))
    }
    fn bad(&self, what: &str) -> PickleError {
        PickleError::Malformed {
            pos: self.pos,
            what: what.to_string(),
        }
    }
    fn pop(&mut self) -> Result<Value, PickleError> {
        self.stack.pop().ok_or_else(|| self.bad("stack underflow"))
    }
    fn pop_mark(&mut self) -> Result<Vec<Value>, PickleError> {
        let mark = self.marks.pop().ok_or_else(|| self.bad("no MARK"))?;
        if mark > self.stack.len() {
            return Err(self.bad("MARK beyond stack"));
        }
        Ok(self.stack.split_off(mark))
    }
    fn top(&mut self) -> Result<&mut Value, PickleError> {
        let pos = self.pos;
        self.stack.last_mut().ok_or(PickleError::Malformed {
            pos,
            what: "stack underflow".into(),
        })
    }
    fn text(&mut self, n: usize) -> Result<Value, PickleError> {
        let s = self.take(n)?;
        Ok(Value::Str(
            String::from_utf8(s.to_vec()).map_err(|_| self.bad("string is not UTF-8"))?,
        ))
    }
    fn len_prefixed(&mut self, width: usize) -> Result<usize, PickleError> {
        let n = self.le(width)?;
        usize::try_from(n).map_err(|_| self.bad("length overflows"))
    }

    fn run(&mut self) -> Result<Value, PickleError> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(PickleError::Unsupported(format!("pickle protocol {proto}")));
                    }
                }
                0x95 => {
                    self.take(8)?; // FRAME: a length hint only
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = self.le(4)? as u32 as i32 as i64;
                    self.stack.push(Value::Int(v))
                }
                b'K' => {
                    let v = self.u8()? as i64;
                    self.stack.push(Value::Int(v))
                }
                b'M' => {
                    let v = self.le(2)? as i64;
                    self.stack.push(Value::Int(v))
                }
                0x8a => {
                    // LONG1: little-endian two's complement of n bytes
                    let n = self.u8()? as usize;
                    let s = self.take(n)?;
                    if n > 8 {
                        return Err(self.bad("integer wider than 64 bits"));
                    }
                    let mut b = if s.last().is_some_and(|&x| x & 0x80 != 0) {
                        [0xffu8; 8]
                    } else {
                        [0u8; 8]
                    };
                    b[..n].copy_from_slice(s);
                    self.stack.push(Value::Int(i64::from_le_bytes(b)))
                }
                b'I' => {
                    // INT (protocol 0), also True/False as 01/00
                    let l = self.line()?;
                    let v = match l {
                        "01" => Value::Bool(true),
                        "00" => Value::Bool(false),
                        _ => Value::Int(l.trim().parse().map_err(|_| self.bad("bad INT"))?),
                    };
                    self.stack.push(v)
                }
                b'L' => {
                    let l = self.line()?.trim_end_matches('L').to_string();
                    self.stack
                        .push(Value::Int(l.parse().map_err(|_| self.bad("bad LONG"))?))
                }
                b'F' => {
                    let l = self.line()?;
                    self.stack.push(Value::Float(
                        l.trim().parse().map_err(|_| self.bad("bad FLOAT"))?,
                    ))
                }
                b'G' => {
                    let s = self.take(8)?;
                    self.stack
                        .push(Value::Float(f64::from_be_bytes(s.try_into().unwrap())))
                }
                0x8c => {
                    let n = self.len_prefixed(1)?;
                    let v = self.text(n)?;
                    self.stack.push(v)
                }
                b'X' => {
                    let n = self.len_prefixed(4)?;
                    let v = self.text(n)?;
                    self.stack.push(v)
                }
                0x8d => {
                    let n = self.len_prefixed(8)?;
                    let v = self.text(n)?;
                    self.stack.push(v)
                }
                b'V' => {
                    let l = self.line()?;
                    self.stack.push(Value::Str(unescape_raw_unicode(l)))
                }
                // Byte strings: Python 3 bytes (C, B, 0x8e), Python 2 str (U, T), bytearray (0x96).
                b'C' | b'U' => {
                    let n = self.len_prefixed(1)?;
                    let s = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(s))
                }
                b'B' | b'T' => {
                    let n = self.len_prefixed(4)?;
                    let s = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(s))
                }
                0x8e | 0x96 => {
                    let n = self.len_prefixed(8)?;
                    let s = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(s))
                }
                b'S' => {
                    let l = self.line()?;
                    let inner = l.trim().trim_matches(|c| c == '\'' || c == '"');
                    self.stack.push(Value::Bytes(inner.as_bytes().to_vec()))
                }
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b']' => self.stack.push(Value::List(Vec::new())),
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b'd' => {
                    let items = self.pop_mark()?;
                    let d = pairs(items).ok_or_else(|| self.bad("odd number of dict items"))?;
                    self.stack.push(Value::Dict(d))
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(items))
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items))
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err(self.bad("stack underflow"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items))
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    match self.top()? {
                        Value::Dict(d) => d.push((k, v)),
                        _ => return Err(self.bad("SETITEM on a non-dict")),
                    }
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let new = pairs(items).ok_or_else(|| self.bad("odd number of dict items"))?;
                    match self.top()? {
                        Value::Dict(d) => d.extend(new),
                        _ => return Err(self.bad("SETITEMS on a non-dict")),
                    }
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.top()? {
                        Value::List(l) => l.push(v),
                        _ => return Err(self.bad("APPEND on a non-list")),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Value::List(l) => l.extend(items),
                        _ => return Err(self.bad("APPENDS on a non-list")),
                    }
                }
                b'q' => {
                    let i = self.u8()? as usize;
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                b'r' => {
                    let i = self.len_prefixed(4)?;
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                b'p' => {
                    let i: usize = self
                        .line()?
                        .trim()
                        .parse()
                        .map_err(|_| self.bad("bad PUT"))?;
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                0x94 => {
                    let i = self.memo.len();
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                b'h' | b'j' | b'g' => {
                    let i = match op {
                        b'h' => self.u8()? as usize,
                        b'j' => self.len_prefixed(4)?,
                        _ => self
                            .line()?
                            .trim()
                            .parse()
                            .map_err(|_| self.bad("bad GET"))?,
                    };
                    let v = self
                        .memo
                        .get(&i)
                        .cloned()
                        .ok_or_else(|| self.bad("memo key missing"))?;
                    self.stack.push(v)
                }
                b'c' => {
                    let module = self.line()?.to_string();
                    let name = self.line()?.to_string();
                    self.stack.push(Value::Global(whitelist(&module, &name)?))
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => {
                            self.stack.push(Value::Global(whitelist(&m, &n)?))
                        }
                        _ => return Err(self.bad("STACK_GLOBAL needs two strings")),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let f = self.pop()?;
                    let v = self.apply(f, args)?;
                    self.stack.push(v)
                }
                b'b' => {
                    let state = self.pop()?;
                    let obj = self.pop()?;
                    let v = self.build(obj, state)?;
                    self.stack.push(v)
                }
                _ => return Err(PickleError::Opcode { op, pos: at }),
            }
        }
    }

    /// REDUCE with a whitelisted callable: builds a value, calls nothing.
    fn apply(&self, f: Value, args: Value) -> Result<Value, PickleError> {
        let Value::Global(c) = f else {
            return Err(self.bad("REDUCE on something that is not a known callable"));
        };
        let Value::Tuple(a) = args else {
            return Err(self.bad("REDUCE arguments are not a tuple"));
        };
        match (c, a.as_slice()) {
            (Callable::Reconstruct, [Value::Global(Callable::NdarrayClass), ..]) => {
                Ok(Value::EmptyArray)
            }
            (Callable::Dtype, [Value::Str(d), ..]) => Ok(Value::Dtype(d.clone())),
            (Callable::CodecsEncode, [Value::Str(s), Value::Str(enc)])
                if enc == "latin1" || enc == "latin-1" =>
            {
                // Python 3 bytes pickled at protocol 2: each char is one byte.
                s.chars()
                    .map(|ch| {
                        u8::try_from(ch as u32)
                            .map_err(|_| self.bad("latin1 text with a char above 255"))
                    })
                    .collect::<Result<Vec<u8>, _>>()
                    .map(Value::Bytes)
            }
            (
                Callable::FromBuffer,
                [Value::Bytes(buf), Value::Dtype(d), Value::Tuple(shape), order],
            ) => {
                let shape =
                    ints(shape).ok_or_else(|| self.bad("_frombuffer shape is not integers"))?;
                let fortran = matches!(order, Value::Str(o) if o == "F");
                Ok(Value::Array(NdArray {
                    dtype: d.clone(),
                    shape,
                    data: buf.clone(),
                    fortran,
                }))
            }
            (Callable::Scalar, [Value::Dtype(d), Value::Bytes(b)]) => {
                let arr = NdArray {
                    dtype: d.clone(),
                    shape: vec![],
                    data: b.clone(),
                    fortran: false,
                };
                let (kind, _, _) = dtype_parts(d)?;
                if kind == 'f' {
                    Ok(Value::Float(arr.to_f64()?[0]))
                } else {
                    Ok(Value::Int(arr.to_i64()?[0]))
                }
            }
            _ => Err(self.bad(&format!("unexpected arguments for {c:?}"))),
        }
    }

    /// BUILD: set the state of an array or dtype under construction.
    fn build(&self, obj: Value, state: Value) -> Result<Value, PickleError> {
        match (obj, state) {
            (Value::Dtype(d), Value::Tuple(st)) => {
                // (version, byte order, ...): keep the explicit byte order.
                let order = match st.get(1) {
                    Some(Value::Str(o)) if o == ">" || o == "<" => o.clone(),
                    _ => String::new(),
                };
                let base = d.trim_start_matches(['<', '>', '|', '=']);
                Ok(Value::Dtype(format!("{order}{base}")))
            }
            (Value::EmptyArray, Value::Tuple(st)) => {
                let [_, Value::Tuple(shape), Value::Dtype(d), fortran, raw] = st.as_slice() else {
                    return Err(
                        self.bad("ndarray state is not (version, shape, dtype, fortran, data)")
                    );
                };
                let shape = ints(shape).ok_or_else(|| self.bad("ndarray shape is not integers"))?;
                let data =
                    match raw {
                        Value::Bytes(b) => b.clone(),
                        Value::Str(s) => s.chars().map(|c| c as u32 as u8).collect(),
                        _ => return Err(PickleError::Unsupported(
                            "an object array (dtype=object); save the array with a numeric dtype"
                                .into(),
                        )),
                    };
                Ok(Value::Array(NdArray {
                    dtype: d.clone(),
                    shape,
                    data,
                    fortran: matches!(fortran, Value::Bool(true) | Value::Int(1)),
                }))
            }
            _ => Err(self.bad("BUILD on something that is not a NumPy array or dtype")),
        }
    }
}

fn whitelist(module: &str, name: &str) -> Result<Callable, PickleError> {
    let m = module
        .trim_start_matches("numpy._core")
        .trim_start_matches("numpy.core");
    Ok(match (module, m, name) {
        (_, ".multiarray", "_reconstruct") if module.starts_with("numpy") => Callable::Reconstruct,
        ("numpy", _, "ndarray") => Callable::NdarrayClass,
        ("numpy", _, "dtype") => Callable::Dtype,
        (_, ".numeric", "_frombuffer") if module.starts_with("numpy") => Callable::FromBuffer,
        (_, ".multiarray", "scalar") if module.starts_with("numpy") => Callable::Scalar,
        ("_codecs", _, "encode") => Callable::CodecsEncode,
        _ => return Err(PickleError::Global(format!("{module}.{name}"))),
    })
}

fn pairs(items: Vec<Value>) -> Option<Vec<(Value, Value)>> {
    if !items.len().is_multiple_of(2) {
        return None;
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Some(out)
}

fn ints(v: &[Value]) -> Option<Vec<usize>> {
    v.iter()
        .map(|x| match x {
            Value::Int(i) if *i >= 0 => Some(*i as usize),
            _ => None,
        })
        .collect()
}

fn unescape_raw_unicode(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && chars.peek() == Some(&'u') {
            chars.next();
            let hex: String = chars.by_ref().take(4).collect();
            if let Some(ch) = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                out.push(ch);
                continue;
            }
        }
        out.push(c);
    }
    out
}

impl Value {
    /// Look up a string key in a dict.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(d) => d
                .iter()
                .find(|(k, _)| {
                    matches!(k, Value::Str(s) if s == key)
                        || matches!(k, Value::Bytes(b) if b == key.as_bytes())
                })
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// A short description for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "a bool",
            Value::Int(_) => "an int",
            Value::Float(_) => "a float",
            Value::Str(_) => "a string",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "a list",
            Value::Tuple(_) => "a tuple",
            Value::Dict(_) => "a dict",
            Value::Array(_) => "a NumPy array",
            Value::Dtype(_) => "a dtype",
            Value::Global(_) => "a callable",
            Value::EmptyArray => "an unfinished array",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_code() {
        // pickle.dumps of os.system('echo hi') via __reduce__, protocol 0.
        let evil = b"cposix\nsystem\np0\n(Vecho hi\np1\ntp2\nRp3\n.";
        let err = load(evil).unwrap_err();
        assert_eq!(err, PickleError::Global("posix.system".into()));
        assert!(err.to_string().contains("never runs pickle code"));
        // builtins.eval through STACK_GLOBAL (protocol 4).
        let evil4 =
            b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00\x8c\x08builtins\x8c\x04eval\x93.";
        assert!(matches!(load(evil4), Err(PickleError::Global(g)) if g == "builtins.eval"));
    }

    #[test]
    fn plain_values_protocol_2() {
        // pickle.dumps({'a': [1, 2.5, None, True], 'b': (300, -2)}, protocol=2)
        let b = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01G@\x04\x00\x00\x00\x00\x00\x00N\x88eX\x01\x00\x00\x00bq\x03M,\x01J\xfe\xff\xff\xff\x86q\x04u.";
        let v = load(b).unwrap();
        assert_eq!(
            v.get("a"),
            Some(&Value::List(vec![
                Value::Int(1),
                Value::Float(2.5),
                Value::None,
                Value::Bool(true)
            ]))
        );
        assert_eq!(
            v.get("b"),
            Some(&Value::Tuple(vec![Value::Int(300), Value::Int(-2)]))
        );
    }

    #[test]
    fn truncated_and_unknown_opcode() {
        assert!(matches!(
            load(b"\x80\x02}q\x00(X\x05\x00\x00\x00ab"),
            Err(PickleError::Truncated(_))
        ));
        assert!(matches!(
            load(b"\x80\x02\xff."),
            Err(PickleError::Opcode { op: 0xff, pos: 2 })
        ));
    }

    #[test]
    fn float_scalar_keeps_its_value() {
        // pickle.dumps(np.float32(0.5), protocol=2), built by hand: scalar(dtype('f4'), bytes).
        let m = Machine {
            b: b"",
            pos: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
        };
        let v = m
            .apply(
                Value::Global(Callable::Scalar),
                Value::Tuple(vec![
                    Value::Dtype("<f4".into()),
                    Value::Bytes(0.5f32.to_le_bytes().to_vec()),
                ]),
            )
            .unwrap();
        assert_eq!(v, Value::Float(0.5));
    }

    #[test]
    fn dtype_strings() {
        assert_eq!(dtype_parts("|u1").unwrap(), ('u', 1, false));
        assert_eq!(dtype_parts(">i4").unwrap(), ('i', 4, true));
        assert!(dtype_parts("O8").is_err());
        let a = NdArray {
            dtype: ">i2".into(),
            shape: vec![2],
            data: vec![0, 5, 0xff, 0xfe],
            fortran: false,
        };
        assert_eq!(a.to_i64().unwrap(), vec![5, -2]);
        let f = NdArray {
            dtype: "<f4".into(),
            shape: vec![2],
            data: [0.0f32, 1.0].iter().flat_map(|v| v.to_le_bytes()).collect(),
            fortran: false,
        };
        assert_eq!(f.to_u8().unwrap(), vec![0, 255]);
    }
}
