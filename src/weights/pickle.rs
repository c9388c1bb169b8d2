//! A restricted pickle reader: enough of the pickle machine to read a PyTorch `state_dict`, and
//! nothing that executes code.
//!
//! Every opcode builds inert data in an arena. `GLOBAL` only records a (module, name) pair,
//! `REDUCE` only records "call this with these arguments" (plus one special case: an empty
//! `collections.OrderedDict()` becomes a dict so that `SETITEMS` can fill it), `BUILD` on a dict
//! is ignored (it carries the state_dict's `_metadata`). Opcodes outside the accepted set are an
//! error naming the opcode. Every length read from the input is checked against the bytes that
//! remain, so no allocation can exceed the input's size; object count is bounded by the opcode
//! count.

use std::collections::HashMap;

/// Index of an object in the arena.
pub type Id = usize;

/// An inert pickled value.
#[derive(Clone, Debug, PartialEq)]
pub enum Obj {
    None,
    Bool(bool),
    Int(i64),
    /// An integer wider than 64 bits: little-endian two's complement bytes.
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Id>),
    List(Vec<Id>),
    Dict(Vec<(Id, Id)>),
    /// A reference to `module.name`, never resolved.
    Global(String, String),
    /// A persistent id (torch storages).
    PersId(Id),
    /// `func(*args)`, recorded, never called.
    Call {
        func: Id,
        args: Id,
    },
    /// `obj.__setstate__(state)`, recorded.
    Built {
        obj: Id,
        state: Id,
    },
}

/// The result of reading one pickle: the arena and the root object.
#[derive(Debug)]
pub struct Pickle {
    pub arena: Vec<Obj>,
    pub root: Id,
    /// Bytes consumed, up to and including STOP.
    pub consumed: usize,
}

impl Pickle {
    pub fn get(&self, id: Id) -> &Obj {
        &self.arena[id]
    }

    /// A short description of an object's kind, for error messages.
    pub fn kind(&self, id: Id) -> String {
        match self.get(id) {
            Obj::None => "None".into(),
            Obj::Bool(_) => "a bool".into(),
            Obj::Int(_) | Obj::BigInt(_) => "an int".into(),
            Obj::Float(_) => "a float".into(),
            Obj::Str(_) => "a string".into(),
            Obj::Bytes(_) => "bytes".into(),
            Obj::Tuple(_) => "a tuple".into(),
            Obj::List(_) => "a list".into(),
            Obj::Dict(_) => "a dict".into(),
            Obj::Global(m, n) => format!("a reference to {m}.{n}"),
            Obj::PersId(_) => "a persistent id".into(),
            Obj::Call { func, .. } => match self.get(*func) {
                Obj::Global(m, n) => format!("a {m}.{n}(...) object"),
                _ => "a constructed object".into(),
            },
            Obj::Built { obj, .. } => self.kind(*obj),
        }
    }
}

/// Reads one pickle from the start of `data`.
pub fn read(data: &[u8]) -> Result<Pickle, String> {
    Machine::new(data).run()
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    arena: Vec<Obj>,
    stack: Vec<Id>,
    marks: Vec<usize>,
    memo: HashMap<u32, Id>,
}

impl<'a> Machine<'a> {
    fn new(data: &'a [u8]) -> Self {
        Machine {
            data,
            pos: 0,
            arena: Vec::new(),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.data.len() - self.pos {
            return Err(format!(
                "truncated pickle: needs {n} bytes at offset {}, {} remain",
                self.pos,
                self.data.len() - self.pos
            ));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().unwrap()))
    }
    fn line(&mut self) -> Result<&'a str, String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("truncated pickle: unterminated text line")?;
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| "non-UTF-8 text line in pickle")?;
        self.pos += n + 1;
        Ok(s)
    }

    fn push(&mut self, o: Obj) {
        self.arena.push(o);
        self.stack.push(self.arena.len() - 1);
    }
    fn pop(&mut self) -> Result<Id, String> {
        if let Some(&m) = self.marks.last() {
            if self.stack.len() <= m {
                return Err("pickle stack underflow (pop across a mark)".into());
            }
        }
        self.stack
            .pop()
            .ok_or_else(|| "pickle stack underflow".into())
    }
    fn top(&self) -> Result<Id, String> {
        self.stack
            .last()
            .copied()
            .ok_or_else(|| "pickle stack underflow".into())
    }
    fn pop_mark(&mut self) -> Result<Vec<Id>, String> {
        let m = self
            .marks
            .pop()
            .ok_or("pickle opcode needs a MARK, none is set")?;
        if m > self.stack.len() {
            return Err("corrupt pickle mark".into());
        }
        Ok(self.stack.split_off(m))
    }
    fn memo_put(&mut self, k: u32) -> Result<(), String> {
        let id = self.top()?;
        self.memo.insert(k, id);
        Ok(())
    }
    fn memo_get(&mut self, k: u32) -> Result<(), String> {
        let id = *self
            .memo
            .get(&k)
            .ok_or_else(|| format!("pickle memo key {k} is not defined"))?;
        self.stack.push(id);
        Ok(())
    }
    fn utf8(b: &[u8]) -> Result<String, String> {
        String::from_utf8(b.to_vec()).map_err(|_| "invalid UTF-8 string in pickle".to_string())
    }

    fn set_items(&mut self, dict: Id, items: Vec<Id>) -> Result<(), String> {
        if !items.len().is_multiple_of(2) {
            return Err("odd number of items for a dict in pickle".into());
        }
        let pairs: Vec<(Id, Id)> = items.chunks_exact(2).map(|c| (c[0], c[1])).collect();
        match &mut self.arena[dict] {
            Obj::Dict(d) => {
                d.extend(pairs);
                Ok(())
            }
            _ => Err("SETITEM(S) on an object that is not a dict".into()),
        }
    }

    fn append(&mut self, list: Id, items: Vec<Id>) -> Result<(), String> {
        match &mut self.arena[list] {
            Obj::List(l) => {
                l.extend(items);
                Ok(())
            }
            _ => Err("APPEND(S) on an object that is not a list".into()),
        }
    }

    fn run(mut self) -> Result<Pickle, String> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let p = self.u8()?;
                    if p > 5 {
                        return Err(format!("unsupported pickle protocol {p}"));
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: a length hint only
                }
                b'.' => {
                    let root = self.pop()?;
                    return Ok(Pickle {
                        arena: self.arena,
                        root,
                        consumed: self.pos,
                    });
                }
                b'(' => self.marks.push(self.stack.len()),
                b'}' => self.push(Obj::Dict(Vec::new())),
                b']' => self.push(Obj::List(Vec::new())),
                b')' => self.push(Obj::Tuple(Vec::new())),
                b'N' => self.push(Obj::None),
                0x88 => self.push(Obj::Bool(true)),
                0x89 => self.push(Obj::Bool(false)),
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Obj::Tuple(items));
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Obj::List(items));
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    self.push(Obj::Dict(Vec::new()));
                    let d = self.top()?;
                    self.set_items(d, items)?;
                }
                0x85 => {
                    let a = self.pop()?;
                    self.push(Obj::Tuple(vec![a]));
                }
                0x86 => {
                    let b = self.pop()?;
                    let a = self.pop()?;
                    self.push(Obj::Tuple(vec![a, b]));
                }
                0x87 => {
                    let c = self.pop()?;
                    let b = self.pop()?;
                    let a = self.pop()?;
                    self.push(Obj::Tuple(vec![a, b, c]));
                }
                b'a' => {
                    let v = self.pop()?;
                    let l = self.top()?;
                    self.append(l, vec![v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let l = self.top()?;
                    self.append(l, items)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let d = self.top()?;
                    self.set_items(d, vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let d = self.top()?;
                    self.set_items(d, items)?;
                }
                b'q' => {
                    let k = self.u8()? as u32;
                    self.memo_put(k)?;
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memo_put(k)?;
                }
                0x94 => {
                    let k = self.memo.len() as u32;
                    self.memo_put(k)?;
                }
                b'p' => {
                    let k: u32 = self.line()?.parse().map_err(|_| "bad PUT key in pickle")?;
                    self.memo_put(k)?;
                }
                b'h' => {
                    let k = self.u8()? as u32;
                    self.memo_get(k)?;
                }
                b'j' => {
                    let k = self.u32()?;
                    self.memo_get(k)?;
                }
                b'g' => {
                    let k: u32 = self.line()?.parse().map_err(|_| "bad GET key in pickle")?;
                    self.memo_get(k)?;
                }
                b'c' => {
                    let module = self.line()?.to_string();
                    let name = self.line()?.to_string();
                    self.push(Obj::Global(module, name));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (&self.arena[module], &self.arena[name]) {
                        (Obj::Str(m), Obj::Str(n)) => {
                            let g = Obj::Global(m.clone(), n.clone());
                            self.push(g);
                        }
                        _ => return Err("STACK_GLOBAL needs two strings".into()),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let is_odict = matches!(&self.arena[func],
                        Obj::Global(m, n) if m == "collections" && n == "OrderedDict");
                    let empty_args = matches!(&self.arena[args], Obj::Tuple(a) if a.is_empty());
                    if is_odict && empty_args {
                        self.push(Obj::Dict(Vec::new()));
                    } else {
                        self.push(Obj::Call { func, args });
                    }
                }
                0x81 => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    self.push(Obj::Call { func: cls, args });
                }
                b'b' => {
                    let state = self.pop()?;
                    let obj = self.pop()?;
                    if matches!(self.arena[obj], Obj::Dict(_)) {
                        // OrderedDict state (`_metadata`): not needed.
                        self.stack.push(obj);
                    } else {
                        self.push(Obj::Built { obj, state });
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.push(Obj::PersId(pid));
                }
                b'P' => {
                    let s = self.line()?.to_string();
                    self.arena.push(Obj::Str(s));
                    let id = self.arena.len() - 1;
                    self.push(Obj::PersId(id));
                }
                b'J' => {
                    let v = self.u32()? as i32 as i64;
                    self.push(Obj::Int(v));
                }
                b'K' => {
                    let v = self.u8()? as i64;
                    self.push(Obj::Int(v));
                }
                b'M' => {
                    let v = self.u16()? as i64;
                    self.push(Obj::Int(v));
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    if n > 8 {
                        self.push(Obj::BigInt(b.to_vec()));
                        continue;
                    }
                    let mut buf = if b.last().is_some_and(|&x| x & 0x80 != 0) {
                        [0xffu8; 8]
                    } else {
                        [0u8; 8]
                    };
                    buf[..n].copy_from_slice(b);
                    self.push(Obj::Int(i64::from_le_bytes(buf)));
                }
                b'I' => {
                    let s = self.line()?;
                    let o = match s {
                        "01" => Obj::Bool(true),
                        "00" => Obj::Bool(false),
                        _ => Obj::Int(s.parse().map_err(|_| "bad INT in pickle")?),
                    };
                    self.push(o);
                }
                b'L' => {
                    let s = self.line()?.trim_end_matches('L');
                    let v = s.parse().map_err(|_| "bad LONG in pickle")?;
                    self.push(Obj::Int(v));
                }
                b'G' => {
                    let b = self.take(8)?;
                    self.push(Obj::Float(f64::from_be_bytes(b.try_into().unwrap())));
                }
                b'F' => {
                    let v = self.line()?.parse().map_err(|_| "bad FLOAT in pickle")?;
                    self.push(Obj::Float(v));
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = Self::utf8(self.take(n)?)?;
                    self.push(Obj::Str(s));
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = Self::utf8(self.take(n)?)?;
                    self.push(Obj::Str(s));
                }
                0x8d => {
                    let n = usize::try_from(self.u64()?).map_err(|_| "string too long")?;
                    let s = Self::utf8(self.take(n)?)?;
                    self.push(Obj::Str(s));
                }
                b'U' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.push(Obj::Str(String::from_utf8_lossy(&b).into_owned()));
                }
                b'T' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.push(Obj::Str(String::from_utf8_lossy(&b).into_owned()));
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.push(Obj::Bytes(b));
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.push(Obj::Bytes(b));
                }
                b'0' => {
                    self.pop()?;
                }
                b'2' => {
                    let t = self.top()?;
                    self.stack.push(t);
                }
                other => {
                    return Err(format!(
                        "pickle opcode 0x{other:02x} at offset {at} is not accepted \
                         (only the opcodes of a plain tensor dict are read)"
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nested_containers() {
        // pickle.dumps({'a': [1, (2, 'x')], 'b': None}, protocol=2), written out by hand
        let mut p = vec![0x80, 2, b'}', b'q', 0, b'('];
        p.extend([
            0x8c, 1, b'a', b']', b'q', 1, b'(', b'K', 1, b'K', 2, 0x8c, 1, b'x', 0x86,
        ]);
        p.extend([b'e', 0x8c, 1, b'b', b'N', b'u', b'.']);
        let pk = read(&p).unwrap();
        let Obj::Dict(items) = pk.get(pk.root) else {
            panic!("root is not a dict")
        };
        assert_eq!(items.len(), 2);
        assert_eq!(pk.get(items[0].0), &Obj::Str("a".into()));
        let Obj::List(l) = pk.get(items[0].1) else {
            panic!("not a list")
        };
        assert_eq!(pk.get(l[0]), &Obj::Int(1));
        assert_eq!(pk.get(items[1].1), &Obj::None);
        assert_eq!(pk.consumed, p.len());
    }

    #[test]
    fn rejects_code_execution_opcodes_and_truncation() {
        // INST (b'i') and OBJ (b'o') build instances; EXT1 (0x82) uses the extension registry.
        for op in [b'i', b'o', 0x82] {
            let err = read(&[0x80, 2, op, 0, 0, b'.']).unwrap_err();
            assert!(err.contains("not accepted"), "{err}");
        }
        let err = read(&[0x80, 2, b'X', 0xff, 0xff, 0xff, 0x7f, b'a']).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        assert!(read(&[0x80, 2, b'.']).unwrap_err().contains("underflow"));
        assert!(read(&[0x80, 2, b'h', 7, b'.'])
            .unwrap_err()
            .contains("memo"));
    }

    #[test]
    fn long1_sign_extension() {
        let pk = read(&[0x8a, 2, 0xfe, 0xff, b'.']).unwrap();
        assert_eq!(pk.get(pk.root), &Obj::Int(-2));
        let pk = read(&[0x8a, 1, 0x7f, b'.']).unwrap();
        assert_eq!(pk.get(pk.root), &Obj::Int(127));
    }
}
