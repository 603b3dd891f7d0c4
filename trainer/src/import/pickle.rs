//! A small pickle virtual machine for the opcodes PyTorch's legacy serialization emits
//! (protocol 2, plus the few protocol 3/4 opcodes newer Pythons use for the same objects).
//!
//! It builds plain [`Value`]s and never imports anything: `GLOBAL` yields a
//! [`Value::Global`] name, `REDUCE`/`NEWOBJ` yield a [`Value::Call`] that the caller
//! interprets, and persistent ids (`BINPERSID`) yield a [`Value::Persistent`]. So a
//! malicious file can at worst produce a value the caller rejects.
//!
//! It also bounds what a file can make it build, so that no input can exhaust the stack or
//! the memory of the process that reads it: values nest at most [`MAX_DEPTH`] deep (dropping
//! or printing a value recurses), a list or dict cannot be changed once it sits inside another
//! value (so no value contains itself), and copies made by `DUP` and the memo (`BINPUT`,
//! `BINGET`) are limited to [`MAX_COPIED`] units in all (a tuple copied into itself doubles
//! with every two bytes of input otherwise).

use std::cell::RefCell;
use std::collections::HashMap;
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

/// The deepest nesting of values a pickle may build. PyTorch's state dicts nest about 6 deep.
pub const MAX_DEPTH: u32 = 256;

/// The most copying `DUP`, memo writes and memo reads may do in one pickle, in units: one per
/// value copied plus one per 64 bytes of strings (at most about 64 MiB in all). Lists and dicts
/// are shared, not copied (one unit). The EfficientNet-Lite0 weights need a few thousand.
pub const MAX_COPIED: u64 = 1 << 20;

/// A value on the stack or in the memo, with what the limits need to know about it.
#[derive(Debug, Clone)]
struct Item {
    value: Value,
    /// Nesting depth (a scalar is 1). For lists and dicts, the depth when it was made: their
    /// current depth is in [`Machine::shared`].
    depth: u32,
    /// Units a deep copy of the value costs.
    size: u64,
}

/// What the machine knows about a list or dict it created, keyed by its allocation.
#[derive(Debug, Clone, Copy)]
struct SharedInfo {
    depth: u32,
    /// Set once the container is an element of another value: it may not change after that.
    sealed: bool,
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    /// The start of the opcode being executed, for messages.
    op_start: usize,
    opcode: u8,
    stack: Vec<Item>,
    /// Stack lengths at each MARK.
    marks: Vec<usize>,
    /// Sparse: indices come from the file.
    memo: HashMap<usize, Item>,
    /// Lists and dicts by allocation. Entries outlive their containers only while the machine
    /// runs; an address reused by a new container gets a new entry when it is made.
    shared: HashMap<usize, SharedInfo>,
    copied: u64,
}

fn string_size(len: usize) -> u64 {
    1 + (len as u64) / 64
}

/// The allocation a list or dict lives in (its identity in [`Machine::shared`]).
fn shared_key(v: &Value) -> Option<usize> {
    match v {
        Value::List(l) => Some(Rc::as_ptr(l) as *const () as usize),
        Value::Dict(d) => Some(Rc::as_ptr(d) as *const () as usize),
        _ => None,
    }
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
            memo: HashMap::new(),
            shared: HashMap::new(),
            copied: 0,
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

    /// The current depth of an item (lists and dicts grow while they are filled).
    fn depth(&self, item: &Item) -> u32 {
        shared_key(&item.value)
            .and_then(|k| self.shared.get(&k))
            .map_or(item.depth, |info| info.depth)
    }

    /// Pushes a scalar (depth 1) that costs `size` units to copy.
    fn push_scalar(&mut self, value: Value, size: u64) {
        self.stack.push(Item {
            value,
            depth: 1,
            size,
        });
    }

    /// Pushes a new, empty list or dict (or any other value made without parts).
    fn push_new(&mut self, value: Value) {
        if let Some(k) = shared_key(&value) {
            self.shared.insert(
                k,
                SharedInfo {
                    depth: 1,
                    sealed: false,
                },
            );
        }
        self.push_scalar(value, 1);
    }

    /// The depth and copy size of a value made of `parts`, which it seals: a list or dict
    /// inside another value may no longer change.
    fn enclose(&mut self, parts: &[&Item]) -> Result<(u32, u64), PickleError> {
        let mut depth = 0;
        let mut size: u64 = 1;
        for part in parts {
            depth = depth.max(self.depth(part));
            size = size.saturating_add(part.size);
            if let Some(info) = shared_key(&part.value).and_then(|k| self.shared.get_mut(&k)) {
                info.sealed = true;
            }
        }
        let depth = depth + 1;
        if depth > MAX_DEPTH {
            return Err(self.malformed(format!(
                "values nest deeper than {MAX_DEPTH} levels (MAX_DEPTH)"
            )));
        }
        Ok((depth, size))
    }

    /// Pushes a copy of `item`, counted against [`MAX_COPIED`].
    fn push_copy(&mut self, item: Item) -> Result<(), PickleError> {
        self.charge_copy(item.size)?;
        self.stack.push(item);
        Ok(())
    }

    fn pop(&mut self) -> Result<Item, PickleError> {
        // A MARK fences the stack: popping below it is an error, not a silent success.
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.malformed("stack underflow"));
        }
        self.stack
            .pop()
            .ok_or_else(|| self.malformed("stack underflow"))
    }

    fn top(&self) -> Result<&Item, PickleError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.malformed("stack underflow"));
        }
        self.stack
            .last()
            .ok_or_else(|| self.malformed("stack underflow"))
    }

    /// Pops everything above the last MARK (and the mark itself).
    fn pop_mark(&mut self) -> Result<Vec<Item>, PickleError> {
        let at = self
            .marks
            .pop()
            .ok_or_else(|| self.malformed("no MARK on the stack"))?;
        Ok(self.stack.split_off(at))
    }

    /// Counts a copy of `size` units against [`MAX_COPIED`].
    fn charge_copy(&mut self, size: u64) -> Result<(), PickleError> {
        self.copied = self.copied.saturating_add(size);
        if self.copied > MAX_COPIED {
            return Err(self.malformed(format!(
                "copies of values add up to more than {MAX_COPIED} units (MAX_COPIED)"
            )));
        }
        Ok(())
    }

    fn memo_put(&mut self, index: usize) -> Result<(), PickleError> {
        let size = self
            .stack
            .last()
            .map(|i| i.size)
            .ok_or_else(|| self.malformed("memoizing an empty stack"))?;
        // The memo holds a copy: it counts like one.
        self.charge_copy(size)?;
        if let Some(item) = self.stack.last().cloned() {
            self.memo.insert(index, item);
        }
        Ok(())
    }

    fn memo_get(&mut self, index: usize) -> Result<(), PickleError> {
        let item = self
            .memo
            .get(&index)
            .cloned()
            .ok_or_else(|| self.malformed(format!("memo index {index} was never stored")))?;
        self.push_copy(item)
    }

    /// Adds `items` to the list or dict on top of the stack (`what` names the opcode in
    /// errors): they are sealed, its depth grows. A list or dict that is already inside
    /// another value does not change, and none receives itself, so no value contains itself.
    fn fill(&mut self, what: &str, items: Vec<Item>) -> Result<(), PickleError> {
        let target = self.top()?.value.clone();
        let key = shared_key(&target);
        match key.and_then(|k| self.shared.get(&k)) {
            None => return Err(self.malformed(format!("{what} on a {}", target.kind()))),
            Some(info) if info.sealed => {
                return Err(self.malformed(format!(
                    "{what} on a {} that is already inside another value",
                    target.kind()
                )));
            }
            Some(_) => {}
        }
        if items.iter().any(|i| shared_key(&i.value) == key) {
            return Err(self.malformed(format!("{what} puts a {} into itself", target.kind())));
        }
        if matches!(target, Value::Dict(_)) && !items.len().is_multiple_of(2) {
            return Err(self.malformed(format!("{what} with an odd number of values")));
        }
        let (depth, _) = {
            let parts: Vec<&Item> = items.iter().collect();
            self.enclose(&parts)?
        };
        if let Some(info) = key.and_then(|k| self.shared.get_mut(&k)) {
            info.depth = info.depth.max(depth);
        }
        match &target {
            Value::List(l) => l.borrow_mut().extend(items.into_iter().map(|i| i.value)),
            Value::Dict(d) => {
                let mut d = d.borrow_mut();
                let mut it = items.into_iter().map(|i| i.value);
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.push((k, v));
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn push_tuple(&mut self, items: Vec<Item>) -> Result<(), PickleError> {
        let (depth, size) = {
            let parts: Vec<&Item> = items.iter().collect();
            self.enclose(&parts)?
        };
        let value = Value::Tuple(items.into_iter().map(|i| i.value).collect());
        self.stack.push(Item { value, depth, size });
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
                    return Ok((v.value, self.pos));
                }
                MARK => self.marks.push(self.stack.len()),
                POP => {
                    self.pop()?;
                }
                POP_MARK => {
                    self.pop_mark()?;
                }
                DUP => {
                    let item = self.top()?.clone();
                    self.push_copy(item)?;
                }
                NONE => self.push_scalar(Value::None, 1),
                NEWTRUE => self.push_scalar(Value::Bool(true), 1),
                NEWFALSE => self.push_scalar(Value::Bool(false), 1),
                BININT => {
                    let v = self.u32()? as i32;
                    self.push_scalar(Value::Int(v.into()), 1);
                }
                BININT1 => {
                    let v = self.u8()?;
                    self.push_scalar(Value::Int(v.into()), 1);
                }
                BININT2 => {
                    let v = self.u16()?;
                    self.push_scalar(Value::Int(v.into()), 1);
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
                    self.push_scalar(Value::Int(i128::from_le_bytes(a)), 1);
                }
                BINFLOAT => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.push_scalar(Value::Float(f64::from_be_bytes(a)), 1);
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
                    self.push_scalar(Value::Str(s), string_size(n));
                }
                BINSTRING | SHORT_BINSTRING | BINBYTES | SHORT_BINBYTES | BINBYTES8 => {
                    let n = match self.opcode {
                        BINSTRING | BINBYTES => u64::from(self.u32()?),
                        SHORT_BINSTRING | SHORT_BINBYTES => u64::from(self.u8()?),
                        _ => self.u64()?,
                    };
                    let n = self.len_from(n)?;
                    let bytes = self.take(n)?.to_vec();
                    self.push_scalar(Value::Bytes(bytes), string_size(n));
                }
                EMPTY_TUPLE => self.push_scalar(Value::Tuple(Vec::new()), 1),
                TUPLE => {
                    let items = self.pop_mark()?;
                    self.push_tuple(items)?;
                }
                TUPLE1 | TUPLE2 | TUPLE3 => {
                    let n = usize::from(self.opcode - TUPLE1 + 1);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push_tuple(items)?;
                }
                EMPTY_LIST => self.push_new(Value::List(Rc::default())),
                LIST => {
                    let items = self.pop_mark()?;
                    self.push_new(Value::List(Rc::default()));
                    self.fill("LIST", items)?;
                }
                EMPTY_DICT => self.push_new(Value::Dict(Rc::default())),
                DICT => {
                    let items = self.pop_mark()?;
                    self.push_new(Value::Dict(Rc::default()));
                    self.fill("DICT", items)?;
                }
                APPEND => {
                    let v = self.pop()?;
                    self.fill("APPEND", vec![v])?;
                }
                APPENDS => {
                    let items = self.pop_mark()?;
                    self.fill("APPENDS", items)?;
                }
                SETITEM => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.fill("SETITEM", vec![k, v])?;
                }
                SETITEMS => {
                    let items = self.pop_mark()?;
                    self.fill("SETITEMS", items)?;
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
                    let size = string_size(module.len() + name.len());
                    self.push_scalar(Value::Global { module, name }, size);
                }
                STACK_GLOBAL => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module.value, name.value) {
                        (Value::Str(module), Value::Str(name)) => {
                            let size = string_size(module.len() + name.len());
                            self.push_scalar(Value::Global { module, name }, size)
                        }
                        _ => return Err(self.malformed("STACK_GLOBAL needs two strings")),
                    }
                }
                REDUCE | NEWOBJ => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let (depth, size) = self.enclose(&[&callable, &args])?;
                    let Value::Tuple(arg_values) = args.value else {
                        return Err(self.malformed(format!(
                            "call arguments are a {}, not a tuple",
                            args.value.kind()
                        )));
                    };
                    let value = reduce(callable.value, arg_values);
                    if shared_key(&value).is_some() {
                        self.push_new(value);
                    } else {
                        self.stack.push(Item { value, depth, size });
                    }
                }
                BUILD => {
                    let state = self.pop()?;
                    let top = self.top()?;
                    let (top_depth, top_size) = (self.depth(top), top.size);
                    match &top.value {
                        Value::Call { .. } => {
                            let (depth, size) = self.enclose(&[&state])?;
                            let op_start = self.op_start;
                            let slot = self.stack.last_mut().ok_or(PickleError::Malformed {
                                offset: op_start,
                                reason: "stack underflow".into(),
                            })?;
                            if let Value::Call { state: s, .. } = &mut slot.value {
                                *s = Some(Box::new(state.value));
                            }
                            slot.depth = top_depth.max(depth);
                            slot.size = top_size.saturating_add(size);
                        }
                        // An OrderedDict's attributes (a state dict's `_metadata`): the
                        // items are what matters, so the state is dropped.
                        Value::Dict(_) => {}
                        other => {
                            return Err(self.malformed(format!("BUILD on a {}", other.kind())));
                        }
                    }
                }
                BINPERSID => {
                    let pid = self.pop()?;
                    let (depth, size) = self.enclose(&[&pid])?;
                    self.stack.push(Item {
                        value: Value::Persistent(Box::new(pid.value)),
                        depth,
                        size,
                    });
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
    fn no_value_contains_itself() {
        // EMPTY_LIST, BINPUT 0, BINGET 0, APPEND: the list into itself.
        let err = load(b"]q\x00h\x00a.").expect_err("a list inside itself");
        assert!(err.to_string().contains("into itself"), "{err}");
        // The same through a tuple: list L, (L,), APPEND to L. L is sealed by the tuple.
        let err = load(b"]q\x00h\x00\x85a.").expect_err("a cycle through a tuple");
        assert!(err.to_string().contains("already inside"), "{err}");
        // A dict filled after it was put into a list.
        let err = load(b"}q\x00]h\x00a0K\x01K\x02s.").expect_err("a sealed dict");
        assert!(err.to_string().contains("already inside"), "{err}");
    }

    #[test]
    fn nesting_is_limited_to_max_depth() {
        let mut deep = b")".to_vec();
        deep.extend(std::iter::repeat_n(TUPLE1, MAX_DEPTH as usize));
        deep.push(STOP);
        let err = load(&deep).expect_err("too deep");
        assert!(err.to_string().contains("MAX_DEPTH"), "{err}");
        // One level less is fine.
        let ok = [&deep[..MAX_DEPTH as usize], b"."].concat();
        assert!(load(&ok).is_ok());
        // Lists grow deeper as they are filled: the limit holds there too.
        let depth = MAX_DEPTH as usize;
        let mut lists = vec![EMPTY_LIST; depth + 1];
        lists.extend(std::iter::repeat_n(APPEND, depth));
        lists.push(STOP);
        let err = load(&lists).expect_err("lists too deep");
        assert!(err.to_string().contains("MAX_DEPTH"), "{err}");
    }

    #[test]
    fn copies_are_limited() {
        // (), then DUP + TUPLE2 doubles the tuple with every two bytes: 2^40 values.
        let mut bomb = b")".to_vec();
        for _ in 0..40 {
            bomb.extend([DUP, TUPLE2]);
        }
        bomb.push(STOP);
        let err = load(&bomb).expect_err("a copy bomb");
        assert!(err.to_string().contains("MAX_COPIED"), "{err}");
        // Found by fuzzing: memo writes copy too. A tuple of 2^19 values (its DUPs cost as
        // much) memoized four times is over the limit.
        let mut memo = b")".to_vec();
        for _ in 0..19 {
            memo.extend([DUP, TUPLE2]);
        }
        memo.extend([MEMOIZE, MEMOIZE, MEMOIZE, MEMOIZE, STOP]);
        assert!(
            load(
                &memo[..memo.len() - 5]
                    .iter()
                    .chain(b".")
                    .copied()
                    .collect::<Vec<_>>()
            )
            .is_ok()
        );
        let err = load(&memo).expect_err("memo copies");
        assert!(err.to_string().contains("MAX_COPIED"), "{err}");
        // Lists are shared, not copied: the same with a list costs one unit per copy.
        let mut shared = b"]".to_vec();
        for _ in 0..40 {
            shared.extend([DUP, POP]);
        }
        shared.push(STOP);
        assert!(load(&shared).is_ok());
    }

    #[test]
    fn memo_indices_are_sparse() -> Result<(), PickleError> {
        // LONG_BINPUT 2^31 - 1 and LONG_BINGET of it: no memo of two billion slots.
        let (v, _) = load(b"Nr\xff\xff\xff\x7fj\xff\xff\xff\x7f\x86.")?;
        assert!(matches!(v, Value::Tuple(ref t) if t.len() == 2));
        Ok(())
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
