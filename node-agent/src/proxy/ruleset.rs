//! The rules of ours in the kernel, as plain data: tables → chains → rules.
//!
//! Every rule is kept as the exact text `iptables-save` prints for it (after
//! `-A CHAIN `). The planner builds rules through [`RuleSpec`], which writes
//! them in that canonical order and spelling (`-d 10.0.0.1/32`, `-p` before the
//! matches, quoted comments, `--probability` at iptables' own precision), so a
//! set we applied reads back equal, and diffs between syncs are string compares.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::model::Protocol;

/// The iptables tables we write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Nat,
    Filter,
}

impl Table {
    /// Both tables, in the order a transaction writes them.
    pub const ALL: [Table; 2] = [Table::Nat, Table::Filter];

    pub fn name(self) -> &'static str {
        match self {
            Table::Nat => "nat",
            Table::Filter => "filter",
        }
    }
}

/// Our part of one table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableRules {
    /// Chains we own (name starts with the prefix), each with its rules in order.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Our rules in built-in chains (the jumps into ours), by built-in chain, in order.
    pub jumps: BTreeMap<String, Vec<String>>,
}

impl TableRules {
    fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.jumps.is_empty()
    }

    /// Rules in our chains plus our jumps in built-in chains.
    pub fn rule_count(&self) -> usize {
        self.chains.values().map(Vec::len).sum::<usize>()
            + self.jumps.values().map(Vec::len).sum::<usize>()
    }
}

/// Everything of ours in the nat and filter tables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSet {
    pub nat: TableRules,
    pub filter: TableRules,
}

impl RuleSet {
    pub fn table(&self, table: Table) -> &TableRules {
        match table {
            Table::Nat => &self.nat,
            Table::Filter => &self.filter,
        }
    }

    pub fn table_mut(&mut self, table: Table) -> &mut TableRules {
        match table {
            Table::Nat => &mut self.nat,
            Table::Filter => &mut self.filter,
        }
    }

    /// Rules in our chains plus our jumps in built-in chains.
    pub fn rule_count(&self) -> usize {
        Table::ALL.iter().map(|&t| self.table(t).rule_count()).sum()
    }

    pub fn chain_count(&self) -> usize {
        self.nat.chains.len() + self.filter.chains.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nat.is_empty() && self.filter.is_empty()
    }
}

/// A rule under construction, in the order iptables-save prints the parts:
/// `[!] -s`, `-d`, `-p`, then the matches as added, then `-j`.
#[derive(Clone, Debug, Default)]
pub struct RuleSpec {
    source: Option<(bool, Ipv4Net)>,
    destination: Option<Ipv4Net>,
    protocol: Option<Protocol>,
    matches: String,
}

impl RuleSpec {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn source(mut self, net: Ipv4Net) -> Self {
        self.source = Some((false, net));
        self
    }

    pub fn not_source(mut self, net: Ipv4Net) -> Self {
        self.source = Some((true, net));
        self
    }

    pub fn source_ip(self, ip: Ipv4Addr) -> Self {
        self.source(Ipv4Net::from(ip))
    }

    pub fn destination(mut self, net: Ipv4Net) -> Self {
        self.destination = Some(net);
        self
    }

    pub fn destination_ip(self, ip: Ipv4Addr) -> Self {
        self.destination(Ipv4Net::from(ip))
    }

    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = Some(protocol);
        self
    }

    /// `-m comment`; any text is made safe (see [`quote_comment`]).
    pub fn comment(mut self, text: &str) -> Self {
        self.separate();
        self.matches.push_str("-m comment --comment ");
        push_quoted(&mut self.matches, text);
        self
    }

    /// `-m tcp --dport N` for the rule's protocol (set it first).
    pub fn dport(mut self, port: u16) -> Self {
        let proto = self.protocol.unwrap_or(Protocol::Tcp).iptables_name();
        self.separate();
        let _ = write!(self.matches, "-m {proto} --dport {port}");
        self
    }

    /// `-m <proto>` alone, as DNAT rules carry it.
    pub fn proto_match(mut self) -> Self {
        let proto = self.protocol.unwrap_or(Protocol::Tcp).iptables_name();
        self.separate();
        self.matches.push_str("-m ");
        self.matches.push_str(proto);
        self
    }

    /// Any other match, already in iptables-save's spelling.
    pub fn matched(mut self, text: &str) -> Self {
        self.separate();
        self.matches.push_str(text);
        self
    }

    fn separate(&mut self) {
        if self.matches.is_empty() {
            self.matches.reserve(96);
        } else {
            self.matches.push(' ');
        }
    }

    /// Finishes the rule with `-j <target>` (target text may carry target options).
    pub fn jump(self, target: &str) -> String {
        self.finish(Some(target))
    }

    /// Finishes the rule without a target: it only counts (or, with a
    /// comment, tells a reader what happens next).
    pub fn no_target(self) -> String {
        self.finish(None)
    }

    fn finish(self, target: Option<&str>) -> String {
        let target_len = target.map_or(0, str::len);
        let mut out = String::with_capacity(self.matches.len() + target_len + 64);
        if let Some((negated, net)) = self.source {
            if negated {
                out.push_str("! ");
            }
            let _ = write!(out, "-s {net} ");
        }
        if let Some(net) = self.destination {
            let _ = write!(out, "-d {net} ");
        }
        if let Some(p) = self.protocol {
            let _ = write!(out, "-p {} ", p.iptables_name());
        }
        out.push_str(&self.matches);
        match target {
            Some(target) => {
                if !self.matches.is_empty() {
                    out.push(' ');
                }
                out.push_str("-j ");
                out.push_str(target);
            }
            None => {
                if out.ends_with(' ') {
                    out.pop();
                }
            }
        }
        out
    }
}

/// Longest comment xt_comment keeps (256 bytes with the NUL).
const MAX_COMMENT: usize = 255;

/// A comment as iptables-save prints it (xtables_save_string): bare when it is
/// only `[A-Za-z0-9_-]`, else in double quotes with `"`, `\` and `'` escaped.
/// Characters outside printable ASCII become `?` first — a newline would end the
/// restore line — and the text is cut to what xt_comment keeps.
pub fn quote_comment(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    push_quoted(&mut out, text);
    out
}

fn push_quoted(out: &mut String, text: &str) {
    let kept = text.len().min(MAX_COMMENT);
    let bare = !text.is_empty()
        && text
            .bytes()
            .take(kept)
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        // All ASCII up to `kept`, so this is a char boundary.
        out.push_str(&text[..kept]);
        return;
    }
    out.push('"');
    for c in text.chars().take(MAX_COMMENT) {
        let c = if (' '..='~').contains(&c) { c } else { '?' };
        if matches!(c, '"' | '\\' | '\'') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// `--probability` of 1/n as iptables-save prints it: xt_statistic keeps
/// round(p·2³¹) and prints it back with 11 decimals.
pub fn probability(n: usize) -> String {
    let scale = 2_147_483_648.0_f64;
    let fixed = (scale / n.max(1) as f64).round();
    format!("{:.11}", fixed / scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_are_quoted_like_iptables_save() {
        assert_eq!(quote_comment("x"), "x");
        assert_eq!(quote_comment("ns/svc:p"), "\"ns/svc:p\"");
        assert_eq!(quote_comment("a \"b\" \\ 'c'"), r#""a \"b\" \\ \'c\'""#);
        assert_eq!(quote_comment("line\nbreak\té"), "\"line?break??\"");
        assert_eq!(quote_comment(""), "\"\"");
        assert_eq!(quote_comment(&"a".repeat(400)).len(), 255);
    }

    #[test]
    fn probabilities_match_iptables_precision() {
        assert_eq!(probability(2), "0.50000000000");
        assert_eq!(probability(3), "0.33333333349");
        assert_eq!(probability(4), "0.25000000000");
    }

    #[test]
    fn rule_parts_come_in_save_order() {
        let rule = RuleSpec::new()
            .comment("ns/s:p cluster IP")
            .protocol(Protocol::Tcp)
            .destination_ip(Ipv4Addr::new(10, 0, 0, 1))
            .dport(80)
            .not_source("10.244.0.0/16".parse().unwrap())
            .jump("NC-MARK-MASQ");
        assert_eq!(
            rule,
            "! -s 10.244.0.0/16 -d 10.0.0.1/32 -p tcp -m comment --comment \"ns/s:p cluster IP\" -m tcp --dport 80 -j NC-MARK-MASQ"
        );
    }
}
