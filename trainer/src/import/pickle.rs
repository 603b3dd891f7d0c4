//! A small pickle virtual machine for the opcodes PyTorch's legacy serialization emits
//! (protocol 2, plus the few protocol 3/4 opcodes newer Pythons use for the same objects).
//!
//! It builds plain [`Value`]s and never imports anything: `GLOBAL` yields a
//! [`Value::Global`] name, `REDUCE`/`NEWOBJ` yield a [`Value::Call`] that the caller
//! interprets, and persistent ids (`BINPERSID`) yield a [`Value::Persistent`]. So a
//! malicious file can at worst produce a value the caller rejects.

use std::cell::RefCell;
use std::rc::Rc;

/// A decoded pickle value.
///
/// Lists and dicts are shared (`Rc<RefCell<..>>`) because pickle memoizes them before
/// filling them (`EMPTY_DICT`, `BINPUT`, ..., `SETITEMS`): a later `BINGET` must see the
/// filled container.
#[derive(Debug, Clone)]
pub enum Value {
    None,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Rc<RefCell<Vec<Value>>>),
    /// Insertion-ordered key/value pairs (pickled dicts and `OrderedDict`s alike).
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    /// `module.name` from `GLOBAL`/`STACK_GLOBAL`.
    Global {
        module: String,
        name: String,
    },
    /// `callable(*args)` from `REDUCE` or `cls.__new__(cls, *args)` from `NEWOBJ`, with the
    /// state a later `BUILD` gave it.
    Call {
        callable: Box<Value>,
        args: Vec<Value>,
        state: Option<Box<Value>>,
    },
    /// A persistent id (`BINPERSID`): a reference to data outside the pickle.
    Persistent(Box<Value>),
}

impl Value {
    /// A short name of the value's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global { .. } => "global",
            Value::Call { .. } => "object",
            Value::Persistent(_) => "persistent id",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i128> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i128::from(*b)),
            _ => None,
        }
    }

    /// The `module.name` of a global, or of the callable of a call.
    pub fn global_name(&self) -> Option<String> {
        match self {
            Value::Global { module, name } => Some(format!("{module}.{name}")),
            _ => None,
        }
    }
}

/// Why a pickle could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PickleError {
    #[error("the pickle ends early at byte {offset} (inside opcode {opcode:#04x})")]
    Truncated { offset: usize, opcode: u8 },
    #[error("the data ends before the pickle's STOP opcode")]
    NoStop,
    #[error("unsupported pickle opcode {opcode:#04x} at byte {offset}")]
    UnknownOpcode { opcode: u8, offset: usize },
    #[error("malformed pickle at byte {offset}: {reason}")]
    Malformed { offset: usize, reason: String },
}

/// Reads one pickle from the start of `data`; returns the value and the number of bytes
/// it took (the next pickle, if any, starts there).
pub fn load(data: &[u8]) -> Result<(Value, usize), PickleError> {
    Machine::new(data).run()
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    /// The start of the opcode being executed, for messages.
    op_start: usize,
    opcode: u8,
    stack: Vec<Value>,
    /// Stack lengths at each MARK.
    marks: Vec<usize>,
    memo: Vec<Option<Value>>,
}

// Opcode bytes (pickletools names).
const MARK: u8 = b'(';
const STOP: u8 = b'.';
const POP: u8 = b'0';
const POP_MARK: u8 = b'1';
const DUP: u8 = b'2';
const BININT: u8 = b'J';
const BININT1: u8 = b'K';
const BININT2: u8 = b'M';
const NONE: u8 = b'N';
const BINPERSID: u8 = b'Q';
const REDUCE: u8 = b'R';
const BINSTRING: u8 = b'T';
const SHORT_BINSTRING: u8 = b'U';
const BINUNICODE: u8 = b'X';
const APPEND: u8 = b'a';
const BUILD: u8 = b'b';
const GLOBAL: u8 = b'c';
const DICT: u8 = b'd';
const EMPTY_DICT: u8 = b'}';
const APPENDS: u8 = b'e';
const BINGET: u8 = b'h';
const LONG_BINGET: u8 = b'j';
const LIST: u8 = b'l';
const EMPTY_LIST: u8 = b']';
const BINPUT: u8 = b'q';
const LONG_BINPUT: u8 = b'r';
const SETITEM: u8 = b's';
const TUPLE: u8 = b't';
const EMPTY_TUPLE: u8 = b')';
const SETITEMS: u8 = b'u';
const BINFLOAT: u8 = b'G';
const PROTO: u8 = 0x80;
const NEWOBJ: u8 = 0x81;
const TUPLE1: u8 = 0x85;
const TUPLE2: u8 = 0x86;
const TUPLE3: u8 = 0x87;
const NEWTRUE: u8 = 0x88;
const NEWFALSE: u8 = 0x89;
const LONG1: u8 = 0x8a;
const LONG4: u8 = 0x8b;
const BINBYTES: u8 = b'B';
const SHORT_BINBYTES: u8 = b'C';
const SHORT_BINUNICODE: u8 = 0x8c;
const BINUNICODE8: u8 = 0x8d;
const BINBYTES8: u8 = 0x8e;
const STACK_GLOBAL: u8 = 0x93;
const MEMOIZE: u8 = 0x94;
const FRAME: u8 = 0x95;

impl<'a> Machine<'a> {
    fn new(data: &'a [u8]) -> Self {
        Machine {
            data,
            pos: 0,
            op_start: 0,
            opcode: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: Vec::new(),
        }
    }

    fn malformed(&self, reason: impl Into<String>) -> PickleError {
        PickleError::Malformed {
            offset: self.op_start,
            reason: reason.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or(PickleError::Truncated {
                offset: self.data.len(),
                opcode: self.opcode,
            })?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, PickleError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, PickleError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, PickleError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn len_from(&self, n: u64) -> Result<usize, PickleError> {
        usize::try_from(n).map_err(|_| self.malformed(format!("length {n} is too large")))
    }

    /// A newline-terminated ASCII line (GLOBAL's arguments).
    fn line(&mut self) -> Result<String, PickleError> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(PickleError::Truncated {
                offset: self.data.len(),
                opcode: self.opcode,
            })?;
        let text = std::str::from_utf8(&rest[..n])
            .map_err(|_| self.malformed("GLOBAL name is not UTF-8"))?
            .to_owned();
        self.pos += n + 1;
        Ok(text)
    }

    fn utf8(&self, bytes: &[u8]) -> Result<String, PickleError> {
        String::from_utf8(bytes.to_vec()).map_err(|_| self.malformed("string is not UTF-8"))
    }

    fn push(&mut self, v: Value) {
        self.stack.push(v);
    }

    fn pop(&mut self) -> Result<Value, PickleError> {
        // A MARK fences the stack: popping below it is an error, not a silent success.
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.malformed("stack underflow"));
        }
        self.stack
            .pop()
            .ok_or_else(|| self.malformed("stack underflow"))
    }

    fn top_mut(&mut self) -> Result<&mut Value, PickleError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.malformed("stack underflow"));
        }
        let offset = self.op_start;
        self.stack.last_mut().ok_or(PickleError::Malformed {
            offset,
            reason: "stack underflow".into(),
        })
    }

    /// Pops everything above the last MARK (and the mark itself).
    fn pop_mark(&mut self) -> Result<Vec<Value>, PickleError> {
        let at = self
            .marks
            .pop()
            .ok_or_else(|| self.malformed("no MARK on the stack"))?;
        Ok(self.stack.split_off(at))
    }

    fn memo_put(&mut self, index: usize) -> Result<(), PickleError> {
        let v = self
            .stack
            .last()
            .cloned()
            .ok_or_else(|| self.malformed("memoizing an empty stack"))?;
        // Indices come from the file: refuse absurd ones instead of allocating for them.
        if index > self.data.len() {
            return Err(self.malformed(format!("memo index {index} is out of range")));
        }
        if self.memo.len() <= index {
            self.memo.resize(index + 1, None);
        }
        self.memo[index] = Some(v);
        Ok(())
    }

    fn memo_get(&mut self, index: usize) -> Result<(), PickleError> {
        let v = self
            .memo
            .get(index)
            .and_then(|v| v.clone())
            .ok_or_else(|| self.malformed(format!("memo index {index} was never stored")))?;
        self.push(v);
        Ok(())
    }

    fn set_items(&mut self, target: &Value, items: Vec<Value>) -> Result<(), PickleError> {
        if !items.len().is_multiple_of(2) {
            return Err(self.malformed("SETITEMS with an odd number of values"));
        }
        let Value::Dict(d) = target else {
            return Err(self.malformed(format!("SETITEM on a {}", target.kind())));
        };
        let mut d = d.borrow_mut();
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.push((k, v));
        }
        Ok(())
    }

    fn append(&mut self, target: &Value, items: Vec<Value>) -> Result<(), PickleError> {
        let Value::List(l) = target else {
            return Err(self.malformed(format!("APPEND on a {}", target.kind())));
        };
        l.borrow_mut().extend(items);
        Ok(())
    }

    fn run(mut self) -> Result<(Value, usize), PickleError> {
        loop {
            if self.pos >= self.data.len() {
                return Err(PickleError::NoStop);
            }
            self.op_start = self.pos;
            self.opcode = self.u8()?;
            match self.opcode {
                PROTO => {
                    let p = self.u8()?;
                    if p > 5 {
                        return Err(self.malformed(format!("unknown pickle protocol {p}")));
                    }
                }
                FRAME => {
                    self.u64()?;
                }
                STOP => {
                    let v = self.pop()?;
                    return Ok((v, self.pos));
                }
                MARK => self.marks.push(self.stack.len()),
                POP => {
                    self.pop()?;
                }
                POP_MARK => {
                    self.pop_mark()?;
                }
                DUP => {
                    let v = self.top_mut()?.clone();
                    self.push(v);
                }
                NONE => self.push(Value::None),
                NEWTRUE => self.push(Value::Bool(true)),
                NEWFALSE => self.push(Value::Bool(false)),
                BININT => {
                    let v = self.u32()? as i32;
                    self.push(Value::Int(v.into()));
                }
                BININT1 => {
                    let v = self.u8()?;
                    self.push(Value::Int(v.into()));
                }
                BININT2 => {
                    let v = self.u16()?;
                    self.push(Value::Int(v.into()));
                }
                LONG1 | LONG4 => {
                    let n = if self.opcode == LONG1 {
                        usize::from(self.u8()?)
                    } else {
                        self.u32()? as usize
                    };
                    let bytes = self.take(n)?;
                    if n > 16 {
                        return Err(self.malformed(format!("integer of {n} bytes is too large")));
                    }
                    // Two's complement, little-endian, sign-extended to 128 bits.
                    let fill = if bytes.last().is_some_and(|b| b & 0x80 != 0) {
                        0xff
                    } else {
                        0
                    };
                    let mut a = [fill; 16];
                    a[..n].copy_from_slice(bytes);
                    self.push(Value::Int(i128::from_le_bytes(a)));
                }
                BINFLOAT => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.push(Value::Float(f64::from_be_bytes(a)));
                }
                BINUNICODE | SHORT_BINUNICODE | BINUNICODE8 => {
                    let n = match self.opcode {
                        BINUNICODE => u64::from(self.u32()?),
                        SHORT_BINUNICODE => u64::from(self.u8()?),
                        _ => self.u64()?,
                    };
                    let n = self.len_from(n)?;
                    let bytes = self.take(n)?;
                    let s = self.utf8(bytes)?;
                    self.push(Value::Str(s));
                }
                BINSTRING | SHORT_BINSTRING | BINBYTES | SHORT_BINBYTES | BINBYTES8 => {
                    let n = match self.opcode {
                        BINSTRING | BINBYTES => u64::from(self.u32()?),
                        SHORT_BINSTRING | SHORT_BINBYTES => u64::from(self.u8()?),
                        _ => self.u64()?,
                    };
                    let n = self.len_from(n)?;
                    let bytes = self.take(n)?.to_vec();
                    self.push(Value::Bytes(bytes));
                }
                EMPTY_TUPLE => self.push(Value::Tuple(Vec::new())),
                TUPLE => {
                    let items = self.pop_mark()?;
                    self.push(Value::Tuple(items));
                }
                TUPLE1 | TUPLE2 | TUPLE3 => {
                    let n = usize::from(self.opcode - TUPLE1 + 1);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(Value::Tuple(items));
                }
                EMPTY_LIST => self.push(Value::List(Rc::default())),
                LIST => {
                    let items = self.pop_mark()?;
                    self.push(Value::List(Rc::new(RefCell::new(items))));
                }
                EMPTY_DICT => self.push(Value::Dict(Rc::default())),
                DICT => {
                    let items = self.pop_mark()?;
                    let d = Value::Dict(Rc::default());
                    self.set_items(&d, items)?;
                    self.push(d);
                }
                APPEND => {
                    let v = self.pop()?;
                    let target = self.top_mut()?.clone();
                    self.append(&target, vec![v])?;
                }
                APPENDS => {
                    let items = self.pop_mark()?;
                    let target = self.top_mut()?.clone();
                    self.append(&target, items)?;
                }
                SETITEM => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let target = self.top_mut()?.clone();
                    self.set_items(&target, vec![k, v])?;
                }
                SETITEMS => {
                    let items = self.pop_mark()?;
                    let target = self.top_mut()?.clone();
                    self.set_items(&target, items)?;
                }
                BINPUT => {
                    let i = usize::from(self.u8()?);
                    self.memo_put(i)?;
                }
                LONG_BINPUT => {
                    let i = self.u32()? as usize;
                    self.memo_put(i)?;
                }
                MEMOIZE => {
                    let i = self.memo.len();
                    self.memo_put(i)?;
                }
                BINGET => {
                    let i = usize::from(self.u8()?);
                    self.memo_get(i)?;
                }
                LONG_BINGET => {
                    let i = self.u32()? as usize;
                    self.memo_get(i)?;
                }
                GLOBAL => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push(Value::Global { module, name });
                }
                STACK_GLOBAL => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(module), Value::Str(name)) => {
                            self.push(Value::Global { module, name })
                        }
                        _ => return Err(self.malformed("STACK_GLOBAL needs two strings")),
                    }
                }
                REDUCE | NEWOBJ => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let Value::Tuple(args) = args else {
                        return Err(self.malformed(format!(
                            "call arguments are a {}, not a tuple",
                            args.kind()
                        )));
                    };
                    self.push(reduce(callable, args));
                }
                BUILD => {
                    let state = self.pop()?;
                    match self.top_mut()? {
                        Value::Call { state: slot, .. } => *slot = Some(Box::new(state)),
                        // An OrderedDict's attributes (a state dict's `_metadata`): the
                        // items are what matters, so the state is dropped.
                        Value::Dict(_) => {}
                        other => {
                            let kind = other.kind();
                            return Err(self.malformed(format!("BUILD on a {kind}")));
                        }
                    }
                }
                BINPERSID => {
                    let pid = self.pop()?;
                    self.push(Value::Persistent(Box::new(pid)));
                }
                opcode => {
                    return Err(PickleError::UnknownOpcode {
                        opcode,
                        offset: self.op_start,
                    });
                }
            }
        }
    }
}

/// `collections.OrderedDict()` becomes a plain dict so that SETITEMS can fill it; any other
/// call stays a [`Value::Call`] for the caller to interpret.
fn reduce(callable: Value, args: Vec<Value>) -> Value {
    if let Value::Global { module, name } = &callable
        && module == "collections"
        && name == "OrderedDict"
        && args.is_empty()
    {
        return Value::Dict(Rc::default());
    }
    Value::Call {
        callable: Box::new(callable),
        args,
        state: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_python_values() -> Result<(), PickleError> {
        // pickle.dumps({'a': [1, -2, 300, 70000], 'b': (True, None, 'x')}, protocol=2)
        let data = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01J\xfe\xff\xff\xffM,\x01Jp\x11\x01\x00eX\x01\x00\x00\x00bq\x03\x88NX\x01\x00\x00\x00xq\x04\x87q\x05u.";
        let (v, used) = load(data)?;
        assert_eq!(used, data.len());
        let Value::Dict(d) = v else {
            panic!("expected a dict, got {v:?}");
        };
        let d = d.borrow();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].0.as_str(), Some("a"));
        let Value::List(l) = &d[0].1 else {
            panic!("expected a list");
        };
        let ints: Vec<_> = l.borrow().iter().filter_map(Value::as_int).collect();
        assert_eq!(ints, [1, -2, 300, 70000]);
        let Value::Tuple(t) = &d[1].1 else {
            panic!("expected a tuple");
        };
        assert!(matches!(
            t[..],
            [Value::Bool(true), Value::None, Value::Str(_)]
        ));
        Ok(())
    }

    #[test]
    fn reads_long1_magic_number() -> Result<(), PickleError> {
        // pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2)
        let data = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19.";
        let (v, _) = load(data)?;
        assert_eq!(v.as_int(), Some(0x1950a86a20f9469cfc6c));
        // pickle.dumps(-1, protocol=2) uses BININT; LONG1 with a negative number:
        let (v, _) = load(b"\x80\x02\x8a\x01\xff.")?;
        assert_eq!(v.as_int(), Some(-1));
        Ok(())
    }

    #[test]
    fn memo_shares_containers_filled_later() -> Result<(), PickleError> {
        // EMPTY_LIST, BINPUT 0, MARK, 1, 2, APPENDS, POP, BINGET 0, STOP
        let (v, _) = load(b"\x80\x02]q\x00(K\x01K\x02e0h\x00.")?;
        let Value::List(l) = v else {
            panic!("expected a list");
        };
        assert_eq!(l.borrow().len(), 2);
        Ok(())
    }

    #[test]
    fn truncated_and_garbage_inputs_are_errors() {
        let whole = b"\x80\x02X\x05\x00\x00\x00hello.";
        for cut in 0..whole.len() {
            assert!(load(&whole[..cut]).is_err(), "cut at {cut} was accepted");
        }
        assert!(matches!(
            load(b"\xff\xfe"),
            Err(PickleError::UnknownOpcode { opcode: 0xff, .. })
        ));
        assert!(matches!(load(b"."), Err(PickleError::Malformed { .. })));
        assert!(matches!(load(b"t."), Err(PickleError::Malformed { .. })));
        assert!(matches!(
            load(b"h\x07."),
            Err(PickleError::Malformed { .. })
        ));
        assert!(matches!(
            load(b"X\xff\xff\xff\xffabc"),
            Err(PickleError::Truncated { .. })
        ));
    }

    #[test]
    fn reduce_keeps_the_call_for_the_caller() -> Result<(), PickleError> {
        // GLOBAL 'torch FloatStorage' ... REDUCE of (1,) then BUILD with {}.
        let (v, _) = load(b"\x80\x02ctorch\nFloatStorage\nK\x01\x85R}b.")?;
        let Value::Call {
            callable,
            args,
            state,
        } = v
        else {
            panic!("expected a call");
        };
        assert_eq!(
            callable.global_name().as_deref(),
            Some("torch.FloatStorage")
        );
        assert_eq!(args.len(), 1);
        assert!(state.is_some());
        Ok(())
    }
}
