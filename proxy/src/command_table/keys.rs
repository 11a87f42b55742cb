//! Finding the key arguments of a request, the way Redis 7.0 does it: key specs
//! first, the command's own finder where Redis does not trust its specs, the legacy
//! first/last/step triple as the last resort.

use smallvec::SmallVec;

use super::spec::{BeginSearch, CommandSpec, FindKeys, KeySpec, KeySpecFlags, NativeKeys};

/// Read access to the arguments of a request (`arg(0)` is the command name).
pub trait ArgAccess {
    /// Number of arguments, the command name included.
    fn argc(&self) -> usize;
    /// Argument `i`; only called with `i < argc()`.
    fn arg(&self, i: usize) -> &[u8];
}

impl ArgAccess for kodis_common::resp::Request {
    fn argc(&self) -> usize {
        kodis_common::resp::Request::argc(self)
    }
    fn arg(&self, i: usize) -> &[u8] {
        kodis_common::resp::Request::arg(self, i)
    }
}

impl<T: AsRef<[u8]>> ArgAccess for [T] {
    fn argc(&self) -> usize {
        self.len()
    }
    fn arg(&self, i: usize) -> &[u8] {
        self.get(i).map_or(&[], |a| a.as_ref())
    }
}

impl<T: AsRef<[u8]>> ArgAccess for Vec<T> {
    fn argc(&self) -> usize {
        self.len()
    }
    fn arg(&self, i: usize) -> &[u8] {
        self.get(i).map_or(&[], |a| a.as_ref())
    }
}

/// Key positions of one request; four inline slots cover nearly all traffic.
pub type KeyPositions = SmallVec<[usize; 4]>;

/// Why the keys of a request could not be found; the request is malformed, and the
/// caller answers it with an error instead of routing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The numkeys argument is not a non-negative integer.
    #[error("value is not an integer or out of range")]
    BadNumKeys,
    /// The request ends before the keys its own arguments announce.
    #[error("Number of keys can't be greater than number of args")]
    TooFewArgs,
    /// The request's options are inconsistent (MIGRATE KEYS with a non-empty key).
    #[error("syntax error")]
    Syntax,
}

/// What went wrong with one spec: either the request is malformed, or the spec
/// cannot describe it and the caller must use another finder.
enum SpecFail {
    Malformed(KeyError),
    Unusable,
}

impl CommandSpec {
    /// Argument indices of the keys of this request; empty when the request is
    /// malformed (as Redis' own finder does; the server then reports the error).
    /// Prefer [`CommandSpec::try_key_positions`] to answer malformed requests early.
    pub fn key_positions<A: ArgAccess + ?Sized>(&self, argv: &A) -> KeyPositions {
        self.try_key_positions(argv).unwrap_or_default()
    }

    /// Argument indices of the keys of this request, following Redis 7's key-spec
    /// algorithm (`getKeysUsingKeySpecs` in db.c). Falls back, as Redis does, to
    /// the command's own finder (SORT, MIGRATE) or the legacy first/last/step
    /// triple when the specs are unknown or incomplete. Never panics on malformed
    /// requests: positions are always `< argv.argc()`, and requests whose own
    /// arguments announce keys they do not have give an error.
    pub fn try_key_positions<A: ArgAccess + ?Sized>(
        &self,
        argv: &A,
    ) -> Result<KeyPositions, KeyError> {
        match self.native {
            NativeKeys::Sort => return Ok(sort_keys(argv, true)),
            NativeKeys::SortRo => return Ok(sort_keys(argv, false)),
            NativeKeys::Migrate => return migrate_keys(argv),
            // What the spec walk below gives for it, in a few instructions.
            NativeKeys::First if argv.argc() > 1 => return Ok(KeyPositions::from_slice(&[1])),
            NativeKeys::First => return Err(KeyError::TooFewArgs),
            NativeKeys::None => {}
        }
        let mut out = KeyPositions::new();
        for spec in &self.key_specs {
            // Sharded-pubsub channels are described by specs but are not keys.
            if spec.flags.contains(KeySpecFlags::NOT_KEY) {
                continue;
            }
            match spec_keys(spec, argv, &mut out) {
                Ok(()) => {}
                Err(SpecFail::Malformed(e)) => return Err(e),
                Err(SpecFail::Unusable) => return Ok(legacy_keys(self, argv)),
            }
        }
        if !self.key_specs.is_empty() {
            // Either the specs found the keys, or all specs are channels (SPUBLISH),
            // whose legacy triple would wrongly name the channel as a key.
            return Ok(out);
        }
        // No specs at all: a pre-7 server, where the triple is all there is.
        Ok(legacy_keys(self, argv))
    }
}

/// Key positions of one request with the access flags of each (for ACL checks).
pub type KeyAccesses = SmallVec<[(usize, KeySpecFlags); 4]>;

impl CommandSpec {
    /// Like [`CommandSpec::try_key_positions`], with each key's access flags as
    /// Redis 7.0's `getKeysFromCommandWithSpecs` reports them (`COMMAND
    /// GETKEYSANDFLAGS`): the flags of the spec that found the key, or those of the
    /// command's own finder (SORT, MIGRATE, and SET and BITFIELD, whose flags depend
    /// on their options).
    pub fn try_key_access<A: ArgAccess + ?Sized>(&self, argv: &A) -> Result<KeyAccesses, KeyError> {
        const RO: KeySpecFlags =
            KeySpecFlags(KeySpecFlags::RO.bits() | KeySpecFlags::ACCESS.bits());
        const RW_UPDATE: KeySpecFlags = KeySpecFlags(
            KeySpecFlags::RW.bits() | KeySpecFlags::ACCESS.bits() | KeySpecFlags::UPDATE.bits(),
        );
        let with = |keys: KeyPositions, f: KeySpecFlags| keys.into_iter().map(|k| (k, f)).collect();
        match self.native {
            NativeKeys::Sort => {
                let keys = sort_keys(argv, true);
                let ow = KeySpecFlags(KeySpecFlags::OW.bits() | KeySpecFlags::UPDATE.bits());
                return Ok(keys
                    .iter()
                    .enumerate()
                    .map(|(i, &k)| (k, if i == 0 { RO } else { ow }))
                    .collect());
            }
            NativeKeys::SortRo => return Ok(with(sort_keys(argv, false), RO)),
            NativeKeys::Migrate => {
                let f = KeySpecFlags(
                    KeySpecFlags::RW.bits()
                        | KeySpecFlags::ACCESS.bits()
                        | KeySpecFlags::DELETE.bits(),
                );
                return Ok(with(migrate_keys(argv)?, f));
            }
            // The spec's own flags: the walk below.
            NativeKeys::First | NativeKeys::None => {}
        }
        let variable = self
            .key_specs
            .iter()
            .any(|s| s.flags.contains(KeySpecFlags::VARIABLE_FLAGS));
        if variable {
            let keys = self.try_key_positions(argv)?;
            let opt = |names: &[&[u8]]| {
                (3..argv.argc()).any(|i| names.iter().any(|n| argv.arg(i).eq_ignore_ascii_case(n)))
            };
            let f = match self.name.as_str() {
                // setGetKeys: GET reads the old value.
                "set" if opt(&[b"get"]) => RW_UPDATE,
                "set" => KeySpecFlags(KeySpecFlags::OW.bits() | KeySpecFlags::UPDATE.bits()),
                // bitfieldGetKeys: SET and INCRBY write.
                "bitfield"
                    if (2..argv.argc()).any(|i| {
                        argv.arg(i).eq_ignore_ascii_case(b"set")
                            || argv.arg(i).eq_ignore_ascii_case(b"incrby")
                    }) =>
                {
                    RW_UPDATE
                }
                "bitfield" => RO,
                _ => self
                    .key_specs
                    .iter()
                    .fold(KeySpecFlags::empty(), |a, s| a | s.flags),
            };
            return Ok(with(keys, f));
        }
        let mut out = KeyAccesses::new();
        let mut found = KeyPositions::new();
        for spec in &self.key_specs {
            if spec.flags.contains(KeySpecFlags::NOT_KEY) {
                continue;
            }
            let before = found.len();
            match spec_keys(spec, argv, &mut found) {
                Ok(()) => out.extend(found[before..].iter().map(|&k| (k, spec.flags))),
                Err(SpecFail::Malformed(e)) => return Err(e),
                Err(SpecFail::Unusable) => {
                    let all = self
                        .key_specs
                        .iter()
                        .fold(KeySpecFlags::empty(), |a, s| a | s.flags);
                    return Ok(with(legacy_keys(self, argv), all));
                }
            }
        }
        if self.key_specs.is_empty() {
            return Ok(with(legacy_keys(self, argv), RW_UPDATE));
        }
        Ok(out)
    }
}

/// Converts a spec index to an argument position, if it lies within the request.
fn pos(i: i64, argc: usize) -> Option<usize> {
    usize::try_from(i).ok().filter(|&p| p < argc)
}

/// Appends the keys one spec finds. A keyword that is absent means "no keys".
fn spec_keys<A: ArgAccess + ?Sized>(
    spec: &KeySpec,
    argv: &A,
    out: &mut KeyPositions,
) -> Result<(), SpecFail> {
    if spec.flags.contains(KeySpecFlags::INCOMPLETE) {
        return Err(SpecFail::Unusable);
    }
    let argc = argv.argc();
    let argc_i = i64::try_from(argc).unwrap_or(i64::MAX);
    let first = match &spec.begin {
        BeginSearch::Index(i) => *i,
        BeginSearch::Keyword {
            keyword,
            start_from,
        } => match find_keyword(argv, keyword, *start_from) {
            Some(p) => p as i64 + 1,
            None => return Ok(()),
        },
        BeginSearch::Unknown => return Err(SpecFail::Unusable),
    };
    if first < 1 {
        return Err(SpecFail::Unusable);
    }
    let (first, last, step) = match spec.find {
        FindKeys::Range {
            last_key,
            key_step,
            limit,
        } => {
            let last = if last_key >= 0 {
                first.saturating_add(last_key)
            } else if limit <= 0 {
                argc_i + last_key
            } else {
                // XREAD STREAMS k1 k2 id1 id2: the keys are the first 1/limit of
                // what follows the keyword.
                first + (argc_i - first).max(0) / limit + last_key
            };
            (first, last, key_step)
        }
        FindKeys::Keynum {
            keynum_idx,
            first_key,
            key_step,
        } => {
            let Some(at) = pos(first.saturating_add(keynum_idx), argc) else {
                return Err(SpecFail::Malformed(KeyError::TooFewArgs));
            };
            let n = parse_count(argv.arg(at)).ok_or(SpecFail::Malformed(KeyError::BadNumKeys))?;
            if n == 0 {
                // EVAL script 0: valid, and without keys.
                return Ok(());
            }
            let first = first.saturating_add(first_key);
            let last = first.saturating_add(n.saturating_mul(key_step.max(1))) - key_step.max(1);
            (first, last, key_step)
        }
        FindKeys::Unknown => return Err(SpecFail::Unusable),
    };
    if step < 1 {
        return Err(SpecFail::Unusable);
    }
    if first >= argc_i || last >= argc_i {
        return Err(SpecFail::Malformed(KeyError::TooFewArgs));
    }
    if last < first {
        // A negative last_key past the begin index (e.g. MSET with no pairs) finds
        // nothing; the arity check or the server reports the error.
        return Ok(());
    }
    let mut i = first;
    while i <= last {
        if let Some(p) = pos(i, argc) {
            out.push(p);
        }
        i += step;
    }
    Ok(())
}

/// Index of `keyword` (case-insensitive), searched from `start_from` towards the end,
/// or for a negative `start_from` from `argc + start_from` towards the start; the
/// command name (index 0) is never a candidate.
fn find_keyword<A: ArgAccess + ?Sized>(argv: &A, keyword: &[u8], start_from: i64) -> Option<usize> {
    let argc = argv.argc();
    let argc_i = i64::try_from(argc).ok()?;
    let hit = |i: usize| argv.arg(i).eq_ignore_ascii_case(keyword);
    if start_from > 0 {
        let start = usize::try_from(start_from).ok()?;
        (start..argc).find(|&i| hit(i))
    } else {
        let start = usize::try_from(argc_i + start_from).ok()?;
        (1..=start.min(argc.saturating_sub(1)))
            .rev()
            .find(|&i| hit(i))
    }
}

/// Parses a non-negative decimal count, as Redis' string2ll plus a sign check.
fn parse_count(arg: &[u8]) -> Option<i64> {
    std::str::from_utf8(arg)
        .ok()?
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
}

/// The legacy first/last/step triple; positions past the end are dropped.
fn legacy_keys<A: ArgAccess + ?Sized>(spec: &CommandSpec, argv: &A) -> KeyPositions {
    let mut out = KeyPositions::new();
    let argc = argv.argc();
    let argc_i = i64::try_from(argc).unwrap_or(i64::MAX);
    if spec.first_key < 1 || spec.step < 1 {
        return out;
    }
    let last = if spec.last_key < 0 {
        argc_i + spec.last_key
    } else {
        spec.last_key
    };
    let mut i = spec.first_key;
    while i <= last {
        match pos(i, argc) {
            Some(p) => out.push(p),
            None => break,
        }
        i += spec.step;
    }
    out
}

/// SORT key [BY pattern] [LIMIT offset count] [GET pattern ...] [ASC|DESC] [ALPHA]
/// [STORE destination]: the key, and the destination of the last STORE (Redis lets
/// the last one win). BY/GET patterns name keys only indirectly, so they are not keys.
fn sort_keys<A: ArgAccess + ?Sized>(argv: &A, with_store: bool) -> KeyPositions {
    let mut out = KeyPositions::new();
    let argc = argv.argc();
    if argc < 2 {
        return out;
    }
    out.push(1);
    if !with_store {
        return out;
    }
    let mut store = None;
    let mut i = 2;
    while i < argc {
        let a = argv.arg(i);
        if a.eq_ignore_ascii_case(b"limit") {
            i += 2;
        } else if a.eq_ignore_ascii_case(b"get") || a.eq_ignore_ascii_case(b"by") {
            i += 1;
        } else if a.eq_ignore_ascii_case(b"store") && i + 1 < argc {
            store = Some(i + 1);
            i += 1;
        }
        i += 1;
    }
    out.extend(store);
    out
}

/// MIGRATE host port key|"" db timeout [COPY] [REPLACE] [AUTH pw | AUTH2 user pw]
/// [KEYS key ...]: the key at 3, or with KEYS everything after it (key must be "").
fn migrate_keys<A: ArgAccess + ?Sized>(argv: &A) -> Result<KeyPositions, KeyError> {
    let argc = argv.argc();
    let mut i = 6;
    while i < argc {
        let a = argv.arg(i);
        if a.eq_ignore_ascii_case(b"auth") {
            i += 1;
        } else if a.eq_ignore_ascii_case(b"auth2") {
            i += 2;
        } else if a.eq_ignore_ascii_case(b"keys") {
            if !argv.arg(3).is_empty() {
                return Err(KeyError::Syntax);
            }
            return Ok((i + 1..argc).collect());
        }
        i += 1;
    }
    let mut out = KeyPositions::new();
    if argc > 3 {
        out.push(3);
    }
    Ok(out)
}
