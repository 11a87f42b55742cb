//! TEMPORARY stub, replaced by the real command table.
#![allow(missing_docs)]
use kodis_common::resp::Request;
use smallvec::SmallVec;

#[derive(Debug, Clone)]
pub struct CommandSpec { pub name: String, pub arity: i64, pub first: i64, pub last: i64, pub step: i64, pub flags: Vec<&'static str> }
impl CommandSpec {
    pub fn is_blocking(&self) -> bool { self.flags.contains(&"blocking") }
    pub fn is_pubsub(&self) -> bool { self.flags.contains(&"pubsub") }
    pub fn is_admin(&self) -> bool { self.flags.contains(&"admin") }
    pub fn has_keys(&self) -> bool { self.first > 0 }
    pub fn has_subcommands(&self) -> bool { false }
    pub fn arity_ok(&self, argc: usize) -> bool { let a = self.arity; if a >= 0 { argc as i64 == a } else { argc as i64 >= -a } }
    pub fn key_positions(&self, req: &Request) -> SmallVec<[usize; 4]> {
        let mut v = SmallVec::new();
        if self.first <= 0 { return v; }
        let argc = req.argc() as i64;
        let last = if self.last < 0 { argc + self.last } else { self.last };
        let mut i = self.first;
        while i <= last && i < argc { v.push(i as usize); i += self.step.max(1); }
        v
    }
}
#[derive(Debug, Clone)]
pub struct CommandTable { cmds: Vec<CommandSpec> }
#[derive(Debug, thiserror::Error)]
#[error("bad table")]
pub struct CommandTableError;
impl CommandTable {
    pub fn compiled_in() -> Self {
        let c = |name: &str, arity, first, last, step, flags: Vec<&'static str>| CommandSpec { name: name.into(), arity, first, last, step, flags };
        Self { cmds: vec![
            c("get", 2, 1, 1, 1, vec![]), c("set", -3, 1, 1, 1, vec![]), c("incr", 2, 1, 1, 1, vec![]),
            c("mget", -2, 1, -1, 1, vec![]), c("mset", -3, 1, -1, 2, vec![]), c("del", -2, 1, -1, 1, vec![]),
            c("exists", -2, 1, -1, 1, vec![]), c("unlink", -2, 1, -1, 1, vec![]), c("touch", -2, 1, -1, 1, vec![]),
            c("rename", 3, 1, 2, 1, vec![]), c("msetnx", -3, 1, -1, 2, vec![]), c("dbsize", 1, 0, 0, 0, vec![]),
            c("blpop", -3, 1, -2, 1, vec!["blocking"]), c("shutdown", -1, 0, 0, 0, vec!["admin"]), c("command", -1, 0, 0, 0, vec![]),
            c("lpush", -3, 1, 1, 1, vec![]), c("lrange", 4, 1, 1, 1, vec![]), c("hset", -4, 1, 1, 1, vec![]), c("hgetall", 2, 1, 1, 1, vec![]),
        ]}
    }
    pub fn from_resp(_b: &[u8]) -> Result<Self, CommandTableError> { Err(CommandTableError) }
    pub fn len(&self) -> usize { self.cmds.len() }
    pub fn is_empty(&self) -> bool { self.cmds.is_empty() }
    pub fn commands(&self) -> impl Iterator<Item = &CommandSpec> { self.cmds.iter() }
    pub fn lookup(&self, name: &[u8], _sub: Option<&[u8]>) -> Option<&CommandSpec> { self.cmds.iter().find(|c| c.name.as_bytes().eq_ignore_ascii_case(name)) }
}
