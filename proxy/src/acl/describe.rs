//! Users as `ACL LIST` and `ACL GETUSER` show them, with Redis 7.0's algorithm
//! (`ACLDescribeUser`, `ACLDescribeSelectorCommandRules`): command rules are
//! re-derived from the allowed-commands bits, not echoed.
//!
//! One difference cannot be avoided: where single commands are listed after the
//! categories, Redis lists them in its hash table's order, which changes with every
//! server start; the proxy lists them sorted.

use crate::command_table::{AclCategories, CommandSpec, CommandTable};

use super::user::{KeyPattern, Sanitize, Selector, User};

/// The command rules of `sel`: `+@all`/`-@all`, the categories that fit best, then
/// single commands.
pub fn command_rules(sel: &Selector, table: &CommandTable) -> String {
    let mut rules = String::new();
    let additive = !sel.future_commands();
    let mut fake = Selector::new(table);
    if additive {
        rules.push_str("-@all ");
        fake.apply_all(false);
    } else {
        rules.push_str("+@all ");
        fake.apply_all(true);
    }
    let mut temp = sel.clone();
    let mut applied = [false; AclCategories::ALL.len()];
    loop {
        let mut best = None;
        let (mut mindiff, mut maxsame) = (u64::MAX, 0u64);
        for (j, (cat, _)) in AclCategories::ALL.iter().enumerate() {
            if applied[j] {
                continue;
            }
            let (on, off) = count_category(&temp, table, *cat);
            let (diff, same) = if additive { (off, on) } else { (on, off) };
            if same > diff && (diff < mindiff || (diff == mindiff && same > maxsame)) {
                best = Some(j);
                mindiff = diff;
                maxsame = same;
            }
        }
        let Some(j) = best else { break };
        let (cat, name) = AclCategories::ALL[j];
        fake.change_category(table, cat, additive);
        temp.change_category(table, cat, !additive);
        rules.push_str(if additive { "+@" } else { "-@" });
        rules.push_str(name);
        rules.push(' ');
        applied[j] = true;
    }
    let mut cmds: Vec<&CommandSpec> = table.commands().collect();
    cmds.sort_by(|a, b| a.name.cmp(&b.name));
    for cmd in cmds {
        fix(sel, &mut fake, cmd, &mut rules);
        let mut subs: Vec<&CommandSpec> = cmd.subcommands.values().collect();
        subs.sort_by(|a, b| a.name.cmp(&b.name));
        for sub in subs {
            fix(sel, &mut fake, sub, &mut rules);
        }
    }
    rules.pop();
    rules
}

/// Emits `+cmd`/`-cmd` where the user and the rules so far differ on `cmd`.
fn fix(sel: &Selector, fake: &mut Selector, cmd: &CommandSpec, rules: &mut String) {
    let user = sel.bit(cmd.acl_id);
    if user != fake.bit(cmd.acl_id) {
        rules.push(if user { '+' } else { '-' });
        rules.push_str(&cmd.name);
        rules.push(' ');
        fake.change(cmd, user);
    }
}

/// Commands (and subcommands) of category `cat` allowed and not allowed by `sel`.
fn count_category(sel: &Selector, table: &CommandTable, cat: AclCategories) -> (u64, u64) {
    let (mut on, mut off) = (0, 0);
    for cmd in table.commands() {
        for c in std::iter::once(cmd).chain(cmd.subcommands.values()) {
            if c.acl_categories.intersects(cat) {
                if sel.bit(c.acl_id) {
                    on += 1;
                } else {
                    off += 1;
                }
            }
        }
    }
    (on, off)
}

/// `~p`, `%R~p` or `%W~p`.
pub fn pattern(p: &KeyPattern) -> String {
    let text = String::from_utf8_lossy(&p.pattern);
    match (p.read, p.write) {
        (true, true) => format!("~{text}"),
        (true, false) => format!("%R~{text}"),
        _ => format!("%W~{text}"),
    }
}

/// The flags of `u` in Redis' order.
pub fn flags(u: &User) -> Vec<&'static str> {
    let mut out = vec![if u.enabled { "on" } else { "off" }];
    if u.nopass {
        out.push("nopass");
    }
    match u.sanitize {
        Sanitize::Skip => out.push("skip-sanitize-payload"),
        Sanitize::Sanitize => out.push("sanitize-payload"),
        Sanitize::Unset => {}
    }
    out
}

/// The keys field of `ACL GETUSER`.
pub fn keys(sel: &Selector) -> String {
    if sel.allkeys {
        return "~*".into();
    }
    sel.patterns
        .iter()
        .map(pattern)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The channels field of `ACL GETUSER`.
pub fn channels(sel: &Selector) -> String {
    if sel.allchannels {
        return "&*".into();
    }
    sel.channels
        .iter()
        .map(|c| format!("&{}", String::from_utf8_lossy(c)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One line of `ACL LIST`: `user <name> <flags> <#hashes> <keys> <channels> <commands>`.
pub fn line(u: &User, table: &CommandTable) -> String {
    let mut out = format!("user {} ", u.name);
    for f in flags(u) {
        out.push_str(f);
        out.push(' ');
    }
    for p in &u.passwords {
        out.push('#');
        out.push_str(p);
        out.push(' ');
    }
    let sel = &u.selector;
    if sel.allkeys {
        out.push_str("~* ");
    } else {
        for p in &sel.patterns {
            out.push_str(&pattern(p));
            out.push(' ');
        }
    }
    if sel.allchannels {
        out.push_str("&* ");
    } else {
        out.push_str("resetchannels ");
        for c in &sel.channels {
            out.push('&');
            out.push_str(&String::from_utf8_lossy(c));
            out.push(' ');
        }
    }
    out.push_str(&command_rules(sel, table));
    out
}
