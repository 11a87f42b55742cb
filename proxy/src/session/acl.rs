//! The `ACL` command, answered by the proxy over its own users: WHOAMI, USERS,
//! LIST, GETUSER, CAT, DRYRUN (and HELP). Users are defined in the config file, so
//! the subcommands that change or persist them are refused.

use bytes::Bytes;
use kodis_common::resp::Request;

use super::Session;
use crate::command_table::{AclCategories, CommandSpec, CommandTable};
use crate::error_replies::{refused, wrong_args};
use crate::reply;

use crate::acl::{describe, Acl};

impl Session {
    /// Answers `ACL <subcommand> ...`.
    pub(crate) fn acl_command(&mut self, req: &Request) -> Bytes {
        let commands = self.ctx.commands.load();
        let table = &commands.table;
        let acl = &commands.acl;
        let argc = req.argc();
        if argc < 2 {
            return wrong_args("acl");
        }
        let sub = req.arg(1);
        let Some(spec) = table
            .lookup(b"acl", Some(sub))
            .filter(|s| s.name.contains('|'))
        else {
            return reply::error(&format!(
                "ERR unknown subcommand '{}'. Try ACL HELP.",
                String::from_utf8_lossy(sub)
            ));
        };
        if !spec.arity_ok(argc) {
            return wrong_args(&spec.name);
        }
        match spec.name.as_str() {
            "acl|whoami" => {
                let name = acl.user(self.user).map_or("default", |u| u.name.as_str());
                reply::bulk(name.as_bytes())
            }
            "acl|users" => {
                let names: Vec<Bytes> = acl
                    .users()
                    .iter()
                    .map(|u| reply::bulk(u.name.as_bytes()))
                    .collect();
                reply::array(&names)
            }
            "acl|list" => {
                let lines: Vec<Bytes> = acl
                    .users()
                    .iter()
                    .map(|u| reply::bulk(describe::line(u, table).as_bytes()))
                    .collect();
                reply::array(&lines)
            }
            "acl|getuser" => self.getuser(acl, table, req.arg(2)),
            "acl|cat" => cat(table, (argc == 3).then(|| req.arg(2))),
            "acl|dryrun" => dryrun(acl, table, req),
            "acl|help" => reply::array(
                &[
                    "ACL <subcommand> [<arg> [value] [opt] ...]. kodis-proxy serves:",
                    "CAT [<category>]",
                    "DRYRUN <username> <command> [<arg> ...]",
                    "GETUSER <username>",
                    "LIST",
                    "USERS",
                    "WHOAMI",
                    "HELP",
                    "Users are defined in the proxy's config file ([[users]]).",
                ]
                .map(reply::simple),
            ),
            other => {
                self.ctx.metrics.errors.refused.inc();
                refused(
                    &other.replace('|', " ").to_ascii_uppercase(),
                    "ACL users are defined in kodis-proxy's config file ([[users]])",
                )
            }
        }
    }

    fn getuser(&self, acl: &Acl, table: &CommandTable, name: &[u8]) -> Bytes {
        let Some(u) = acl.find(name).and_then(|i| acl.user(i)) else {
            return if self.resp3 {
                Bytes::from_static(b"_\r\n")
            } else {
                Bytes::from_static(b"$-1\r\n")
            };
        };
        let flags: Vec<Bytes> = describe::flags(u)
            .into_iter()
            .map(|f| reply::bulk(f.as_bytes()))
            .collect();
        let passwords: Vec<Bytes> = u
            .passwords
            .iter()
            .map(|p| reply::bulk(p.as_bytes()))
            .collect();
        let sel = &u.selector;
        let mut out = Vec::new();
        if self.resp3 {
            out.extend_from_slice(b"%6\r\n");
        } else {
            out.extend_from_slice(b"*12\r\n");
        }
        out.extend_from_slice(&reply::bulk(b"flags"));
        if self.resp3 {
            out.extend_from_slice(format!("~{}\r\n", flags.len()).as_bytes());
            flags.iter().for_each(|f| out.extend_from_slice(f));
        } else {
            out.extend_from_slice(&reply::array(&flags));
        }
        out.extend_from_slice(&reply::bulk(b"passwords"));
        out.extend_from_slice(&reply::array(&passwords));
        out.extend_from_slice(&reply::bulk(b"commands"));
        out.extend_from_slice(&reply::bulk(describe::command_rules(sel, table).as_bytes()));
        out.extend_from_slice(&reply::bulk(b"keys"));
        out.extend_from_slice(&reply::bulk(describe::keys(sel).as_bytes()));
        out.extend_from_slice(&reply::bulk(b"channels"));
        out.extend_from_slice(&reply::bulk(describe::channels(sel).as_bytes()));
        out.extend_from_slice(&reply::bulk(b"selectors"));
        out.extend_from_slice(&reply::array(&[]));
        Bytes::from(out)
    }
}

/// `ACL CAT`: the categories, or the commands (and subcommands) of one, sorted
/// (Redis lists them in its hash table's order, which changes from run to run).
fn cat(table: &CommandTable, category: Option<&[u8]>) -> Bytes {
    let Some(name) = category else {
        let all: Vec<Bytes> = AclCategories::ALL
            .iter()
            .map(|(_, n)| reply::bulk(n.as_bytes()))
            .collect();
        return reply::array(&all);
    };
    let text = String::from_utf8_lossy(name);
    let Some(c) = AclCategories::from_name(&text) else {
        return reply::error(&format!("ERR Unknown category '{text}'"));
    };
    let mut names: Vec<&str> = Vec::new();
    for cmd in table.commands() {
        for s in std::iter::once(cmd).chain(cmd.subcommands.values()) {
            if s.acl_categories.intersects(c) {
                names.push(&s.name);
            }
        }
    }
    names.sort_unstable();
    let items: Vec<Bytes> = names.iter().map(|n| reply::bulk(n.as_bytes())).collect();
    reply::array(&items)
}

/// The spec of `argv` as Redis' `lookupCommand` finds it: a container's unknown
/// subcommand is no command at all.
fn strict_lookup<'t>(table: &'t CommandTable, argv: &[&[u8]]) -> Option<&'t CommandSpec> {
    let first = argv.first()?;
    let cmd = table.lookup(first, None)?;
    if cmd.has_subcommands() && argv.len() >= 2 {
        let sub = table.lookup(first, Some(argv[1]))?;
        return sub.name.contains('|').then_some(sub);
    }
    Some(cmd)
}

/// `ACL DRYRUN user command [arg ...]`.
fn dryrun(acl: &Acl, table: &CommandTable, req: &Request) -> Bytes {
    let name = req.arg(2);
    let Some(i) = acl.find(name) else {
        return reply::error(&format!(
            "ERR User '{}' not found",
            String::from_utf8_lossy(name)
        ));
    };
    let argv: Vec<&[u8]> = (3..req.argc()).map(|j| req.arg(j)).collect();
    let Some(spec) = strict_lookup(table, &argv) else {
        return reply::error(&format!(
            "ERR Command '{}' not found",
            String::from_utf8_lossy(req.arg(3))
        ));
    };
    if !spec.arity_ok(argv.len()) {
        return wrong_args(&spec.name);
    }
    match acl.check(i, spec, &argv) {
        Ok(()) => reply::simple("OK"),
        Err(d) => reply::bulk(crate::acl::dryrun_text(d, spec, &argv).as_bytes()),
    }
}
