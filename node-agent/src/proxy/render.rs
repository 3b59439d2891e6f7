//! The text of one `iptables-restore --noflush` transaction. Pure.
//!
//! `--noflush` leaves everything we do not name alone; a chain we name with
//! `:CHAIN - [0:0]` is created or flushed, then refilled with `-A`. So a sync
//! names only our chains, and touches built-in chains only to delete or insert
//! our own jumps, by their exact text. Restore syntax has no "insert unless
//! present", which is why even a full sync is rendered against what is in the
//! kernel (read back with iptables-save) rather than against nothing.

use std::fmt::Write as _;

use super::ruleset::{RuleSet, Table, TableRules};

/// How much of our rules a sync rewrites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// Every chain of ours, whether or not it changed (repairs anything edited by hand).
    Full,
    /// Only chains whose rules changed, as kube-proxy's partial sync.
    Partial,
}

/// One restore transaction and what it does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreInput {
    pub text: String,
    pub chains_written: usize,
    pub chains_deleted: usize,
    /// Built-in chains whose jumps into ours are rewritten.
    pub jump_chains_rewritten: usize,
}

impl RestoreInput {
    /// Nothing to do: the restore can be skipped.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }
}

/// The transaction that turns `current` into `desired`.
///
/// `current` is what is in the kernel now: for a full sync, the set read back
/// with iptables-save; for a partial one, the set applied last (trusted while
/// the canary stands). Chains of ours in `current` but not in `desired` are
/// flushed and deleted; our jumps in a built-in chain are rewritten whole when
/// they differ, so their order is always the desired one.
pub fn render_restore_input(desired: &RuleSet, current: &RuleSet, mode: SyncMode) -> RestoreInput {
    let mut out = RestoreInput::default();
    for table in Table::ALL {
        render_table(
            table,
            desired.table(table),
            current.table(table),
            mode,
            &mut out,
        );
    }
    out
}

/// The transaction that removes every rule and chain of ours in `installed`.
pub fn render_cleanup(installed: &RuleSet) -> RestoreInput {
    render_restore_input(&RuleSet::default(), installed, SyncMode::Partial)
}

fn render_table(
    table: Table,
    desired: &TableRules,
    current: &TableRules,
    mode: SyncMode,
    out: &mut RestoreInput,
) {
    let written: Vec<(&String, &Vec<String>)> = desired
        .chains
        .iter()
        .filter(|(name, rules)| mode == SyncMode::Full || current.chains.get(*name) != Some(*rules))
        .collect();
    let stale: Vec<&String> = current
        .chains
        .keys()
        .filter(|name| !desired.chains.contains_key(*name))
        .collect();
    let empty = Vec::new();
    let jumps: Vec<(&String, &Vec<String>, &Vec<String>)> = desired
        .jumps
        .keys()
        .chain(
            current
                .jumps
                .keys()
                .filter(|k| !desired.jumps.contains_key(*k)),
        )
        .map(|chain| {
            (
                chain,
                desired.jumps.get(chain).unwrap_or(&empty),
                current.jumps.get(chain).unwrap_or(&empty),
            )
        })
        .filter(|(_, want, have)| want != have)
        .collect();
    if written.is_empty() && stale.is_empty() && jumps.is_empty() {
        return;
    }

    let size: usize = written
        .iter()
        .map(|(n, rules)| rules.iter().map(|r| r.len() + n.len() + 5).sum::<usize>())
        .sum();
    let text = &mut out.text;
    text.reserve(size + 64 * (written.len() + stale.len()) + 64);
    let _ = writeln!(text, "*{}", table.name());
    // Declaring a chain creates or flushes it; stale chains are flushed here so
    // that nothing refers to them by the time they are deleted.
    for (name, _) in &written {
        let _ = writeln!(text, ":{name} - [0:0]");
    }
    for name in &stale {
        let _ = writeln!(text, ":{name} - [0:0]");
    }
    for (chain, want, have) in &jumps {
        for rule in have.iter() {
            let _ = writeln!(text, "-D {chain} {rule}");
        }
        for rule in want.iter().rev() {
            let _ = writeln!(text, "-I {chain} 1 {rule}");
        }
    }
    for (name, rules) in &written {
        for rule in rules.iter() {
            let _ = writeln!(text, "-A {name} {rule}");
        }
    }
    for name in &stale {
        let _ = writeln!(text, "-X {name}");
    }
    text.push_str("COMMIT\n");
    out.chains_written += written.len();
    out.chains_deleted += stale.len();
    out.jump_chains_rewritten += jumps.len();
}

/// Where a line of a restore input is: its table, chain and comment, so an
/// error from iptables-restore ("line 1234 failed") can name the service.
pub fn line_context(input: &str, line: usize) -> Option<String> {
    let mut table = "";
    let mut found = None;
    for (i, text) in input.lines().enumerate() {
        if let Some(t) = text.strip_prefix('*') {
            table = t;
        }
        if i + 1 == line {
            found = Some(text);
            break;
        }
    }
    let text = found?;
    let mut words = text.split_whitespace();
    let chain = match words.next()? {
        op @ ("-A" | "-I" | "-D" | "-X") => format!("{op} {}", words.next().unwrap_or("")),
        decl if decl.starts_with(':') => decl.to_string(),
        other => other.to_string(),
    };
    let comment = text
        .split_once("--comment ")
        .map(|(_, rest)| {
            let rest = rest.trim_start();
            match rest.strip_prefix('"') {
                Some(quoted) => quoted.split('"').next().unwrap_or("").to_string(),
                None => rest.split_whitespace().next().unwrap_or("").to_string(),
            }
        })
        .map(|c| format!(" ({c})"))
        .unwrap_or_default();
    Some(format!("table {table}, {chain}{comment}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn set(chains: &[(&str, &[&str])], jumps: &[(&str, &[&str])]) -> RuleSet {
        let map = |items: &[(&str, &[&str])]| -> BTreeMap<String, Vec<String>> {
            items
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|r| r.to_string()).collect()))
                .collect()
        };
        RuleSet {
            nat: TableRules {
                chains: map(chains),
                jumps: map(jumps),
            },
            filter: TableRules::default(),
        }
    }

    #[test]
    fn full_sync_rewrites_every_chain_and_deletes_stale_ones() {
        let desired = set(
            &[("NC-A", &["-j RETURN"]), ("NC-B", &[])],
            &[("PREROUTING", &["-j NC-A"])],
        );
        let current = set(
            &[("NC-A", &["-j RETURN"]), ("NC-OLD", &["-j NC-A"])],
            &[("PREROUTING", &["-j NC-A"])],
        );
        let input = render_restore_input(&desired, &current, SyncMode::Full);
        assert_eq!(
            input.text,
            "*nat\n:NC-A - [0:0]\n:NC-B - [0:0]\n:NC-OLD - [0:0]\n-A NC-A -j RETURN\n-X NC-OLD\nCOMMIT\n"
        );
        assert_eq!(
            (
                input.chains_written,
                input.chains_deleted,
                input.jump_chains_rewritten
            ),
            (2, 1, 0)
        );
    }

    #[test]
    fn partial_sync_writes_only_changed_chains() {
        let current = set(&[("NC-A", &["-j RETURN"]), ("NC-B", &["-j DROP"])], &[]);
        let desired = set(&[("NC-A", &["-j RETURN"]), ("NC-B", &["-j ACCEPT"])], &[]);
        let input = render_restore_input(&desired, &current, SyncMode::Partial);
        assert_eq!(
            input.text,
            "*nat\n:NC-B - [0:0]\n-A NC-B -j ACCEPT\nCOMMIT\n"
        );
        assert!(render_restore_input(&desired, &desired, SyncMode::Partial).is_empty());
    }

    #[test]
    fn jumps_are_rewritten_whole_in_order() {
        let current = set(
            &[("NC-A", &[]), ("NC-B", &[])],
            &[("FORWARD", &["-j NC-B"])],
        );
        let desired = set(
            &[("NC-A", &[]), ("NC-B", &[])],
            &[("FORWARD", &["-j NC-A", "-j NC-B"])],
        );
        let input = render_restore_input(&desired, &current, SyncMode::Partial);
        assert_eq!(
            input.text,
            "*nat\n-D FORWARD -j NC-B\n-I FORWARD 1 -j NC-B\n-I FORWARD 1 -j NC-A\nCOMMIT\n"
        );
    }

    #[test]
    fn cleanup_removes_jumps_before_chains() {
        let installed = set(
            &[("NC-A", &["-j RETURN"])],
            &[("OUTPUT", &["-j NC-A", "-j NC-A"])],
        );
        let input = render_cleanup(&installed);
        assert_eq!(
            input.text,
            "*nat\n:NC-A - [0:0]\n-D OUTPUT -j NC-A\n-D OUTPUT -j NC-A\n-X NC-A\nCOMMIT\n"
        );
    }

    #[test]
    fn line_context_names_chain_and_comment() {
        let text = "*nat\n:NC-A - [0:0]\n-A NC-A -m comment --comment \"ns/web:http cluster IP\" -j X\nCOMMIT\n";
        assert_eq!(
            line_context(text, 3).as_deref(),
            Some("table nat, -A NC-A (ns/web:http cluster IP)")
        );
        assert_eq!(line_context(text, 2).as_deref(), Some("table nat, :NC-A"));
        assert_eq!(line_context(text, 9), None);
    }
}
