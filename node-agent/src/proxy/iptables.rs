//! The edge: iptables-restore, iptables-save and the canary check, run as
//! processes in the current network namespace (the agent runs in its node's),
//! plus the pure parser of iptables-save's output.
//!
//! The plain `iptables-restore`/`iptables-save` are used: they belong to the
//! same alternative (nf_tables or legacy) as the host's `iptables`, so our rules
//! land in the backend everyone else on the host reads, as kube-proxy does.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::error::ProxyError;
use super::plan::{is_owned, CANARY, CANARY_RULE};
use super::render::{line_context, render_cleanup};
use super::ruleset::{RuleSet, Table};

/// Built-in chains of nat and filter: the only foreign chains we put rules in.
const BUILTIN_CHAINS: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];
/// Seconds iptables waits for the xtables lock held by another writer.
const LOCK_WAIT_SECONDS: &str = "5";

/// What the proxier needs from iptables; a fake stands in for it in unit tests.
pub trait Iptables {
    /// Runs one `iptables-restore --noflush` transaction. On failure nothing of a
    /// table whose COMMIT was not reached has changed.
    fn restore(&mut self, input: &str) -> Result<(), ProxyError>;

    /// Our chains and jumps as they are now (iptables-save of nat and filter,
    /// parsed). Costly on nf_tables at scale (seconds for 10,000 Services), so
    /// the proxier reads it only when it knows nothing of the kernel's state.
    fn installed(&mut self) -> Result<RuleSet, ProxyError>;

    /// Only our jumps in the built-in chains (no chains): a few short listings.
    fn jumps(&mut self) -> Result<RuleSet, ProxyError>;

    /// Whether NC-CANARY and its rule are in both tables; when not, someone
    /// flushed or deleted our rules and only a full sync can repair them.
    fn canary_present(&mut self) -> Result<bool, ProxyError>;

    /// The rules of one chain, as iptables-save prints them after `-A CHAIN `;
    /// `None` when the chain does not exist (or cannot be listed). One short
    /// listing: on nf_tables only that chain is read.
    fn chain_rules(&mut self, table: Table, chain: &str)
        -> Result<Option<Vec<String>>, ProxyError>;

    /// Removes every rule and chain of ours, jumps in built-in chains included,
    /// and returns how many rules went.
    fn cleanup(&mut self) -> Result<usize, ProxyError> {
        let installed = self.installed()?;
        let input = render_cleanup(&installed);
        if !input.is_empty() {
            self.restore(&input.text)?;
        }
        Ok(installed.rule_count())
    }
}

/// The iptables commands of the host (or of a given network namespace).
#[derive(Clone, Debug)]
pub struct IptablesCommand {
    /// Run inside this network namespace (through nsenter) instead of the current one.
    netns: Option<PathBuf>,
    restore: String,
    save: String,
    iptables: String,
}

impl Default for IptablesCommand {
    fn default() -> Self {
        Self::new()
    }
}

impl IptablesCommand {
    /// The host's iptables, in the current network namespace.
    pub fn new() -> Self {
        Self {
            netns: None,
            restore: "iptables-restore".into(),
            save: "iptables-save".into(),
            iptables: "iptables".into(),
        }
    }

    /// Runs every command through `nsenter --net=<path>` (tests and benchmarks in
    /// throwaway namespaces; nsenter rather than `ip netns exec`, which remounts /sys).
    pub fn in_netns(path: impl Into<PathBuf>) -> Self {
        Self {
            netns: Some(path.into()),
            ..Self::new()
        }
    }

    /// Other binaries of the same family, such as `iptables-legacy-restore`,
    /// `iptables-legacy-save`, `iptables-legacy` (benchmarks).
    pub fn with_binaries(mut self, restore: &str, save: &str, iptables: &str) -> Self {
        self.restore = restore.into();
        self.save = save.into();
        self.iptables = iptables.into();
        self
    }

    /// `iptables --version`, which names the backend (`nf_tables` or `legacy`).
    pub fn version(&self) -> Result<String, ProxyError> {
        let output = self.run(&self.iptables, &["--version"], None)?;
        Ok(output.trim().to_string())
    }

    fn command(&self, program: &str) -> Command {
        match &self.netns {
            Some(path) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", path.display())).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    /// Runs a command and returns its stdout; a non-zero exit is an error with its stderr.
    fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, ProxyError> {
        let (status, stdout, stderr) = self.run_raw(program, args, stdin)?;
        if !status.success() {
            return Err(ProxyError::Command {
                program: program.to_string(),
                status: status.to_string(),
                stderr,
            });
        }
        Ok(stdout)
    }

    fn run_raw(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<(std::process::ExitStatus, String, String), ProxyError> {
        let spawn_error = |source| ProxyError::Spawn {
            program: program.to_string(),
            source,
        };
        let mut child = self
            .command(program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_error)?;
        // Feed stdin from a thread: a large input must not wait on a full stderr pipe.
        let writer = match (stdin, child.stdin.take()) {
            (Some(text), Some(mut pipe)) => {
                let text = text.to_owned();
                Some(std::thread::spawn(move || pipe.write_all(text.as_bytes())))
            }
            _ => None,
        };
        let output = child.wait_with_output().map_err(spawn_error)?;
        if let Some(writer) = writer {
            // A write error (broken pipe) means the child quit early; its status says why.
            let _ = writer.join();
        }
        Ok((
            output.status,
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ))
    }

    /// `iptables-restore --test`: parses and checks the input without committing it.
    pub fn test_restore(&mut self, input: &str) -> Result<(), ProxyError> {
        self.restore_with(&["--test", "--noflush", "-w", LOCK_WAIT_SECONDS], input)
    }

    fn restore_with(&mut self, args: &[&str], input: &str) -> Result<(), ProxyError> {
        let (status, _, stderr) = self.run_raw(&self.restore, args, Some(input))?;
        if status.success() {
            return Ok(());
        }
        let line = blamed_line(input, &stderr);
        let context = line.and_then(|l| line_context(input, l));
        let at = match (line, &context) {
            (Some(l), Some(c)) => format!(" at line {l} ({c})"),
            (Some(l), None) => format!(" at line {l}"),
            _ => String::new(),
        };
        Err(ProxyError::Restore {
            status: status.to_string(),
            at,
            stderr: stderr.trim().to_string(),
        })
    }
}

impl Iptables for IptablesCommand {
    fn restore(&mut self, input: &str) -> Result<(), ProxyError> {
        self.restore_with(&["--noflush", "-w", LOCK_WAIT_SECONDS], input)
    }

    fn installed(&mut self) -> Result<RuleSet, ProxyError> {
        let mut text = String::new();
        for table in Table::ALL {
            text.push_str(&self.run(&self.save, &["-t", table.name()], None)?);
        }
        parse_save(&text)
    }

    fn jumps(&mut self) -> Result<RuleSet, ProxyError> {
        let mut text = String::new();
        for table in Table::ALL {
            text.push_str(&format!("*{}\n", table.name()));
            let builtins: &[&str] = match table {
                Table::Nat => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
                Table::Filter => &["INPUT", "FORWARD", "OUTPUT"],
            };
            for chain in builtins {
                let listing = self.run(
                    &self.iptables,
                    &["-w", LOCK_WAIT_SECONDS, "-t", table.name(), "-S", chain],
                    None,
                )?;
                // `-S` prints rules as iptables-save does, after a `-P` policy line.
                for line in listing.lines().filter(|l| l.starts_with("-A ")) {
                    text.push_str(line);
                    text.push('\n');
                }
            }
            text.push_str("COMMIT\n");
        }
        parse_save(&text)
    }

    fn canary_present(&mut self) -> Result<bool, ProxyError> {
        for table in Table::ALL {
            let (status, stdout, _) = self.run_raw(
                &self.iptables,
                &["-w", LOCK_WAIT_SECONDS, "-t", table.name(), "-S", CANARY],
                None,
            )?;
            // A missing chain exits 1; any other failure also means we cannot trust our rules.
            let rule = format!("-A {CANARY} {CANARY_RULE}");
            if !status.success() || !stdout.lines().any(|l| l.trim() == rule) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn chain_rules(
        &mut self,
        table: Table,
        chain: &str,
    ) -> Result<Option<Vec<String>>, ProxyError> {
        let (status, stdout, _) = self.run_raw(
            &self.iptables,
            &["-w", LOCK_WAIT_SECONDS, "-t", table.name(), "-S", chain],
            None,
        )?;
        if !status.success() {
            return Ok(None);
        }
        // `-S CHAIN` prints `-N CHAIN` first, then the rules as iptables-save does.
        let prefix = format!("-A {chain} ");
        Ok(Some(
            stdout
                .lines()
                .filter_map(|l| l.trim_end().strip_prefix(&prefix))
                .map(str::to_string)
                .collect(),
        ))
    }
}

/// The input line to blame for a refused restore. nf_tables checks a batch
/// when it commits, so it blames the COMMIT line; its message names the chain
/// ("Chain 'NC-X' does not exist"), and the first line using that chain is
/// the one to show.
fn blamed_line(input: &str, stderr: &str) -> Option<usize> {
    let line = failed_line(stderr);
    let at_commit = line
        .and_then(|l| l.checked_sub(1))
        .and_then(|i| input.lines().nth(i))
        .is_some_and(|t| t.trim() == "COMMIT");
    if line.is_some() && !at_commit {
        return line;
    }
    let chain = stderr
        .split('\'')
        .skip(1)
        .step_by(2)
        .find(|name| is_owned(name))?;
    let used = |text: &str| text.split_whitespace().any(|w| w == chain);
    input
        .lines()
        .position(|t| !t.starts_with(':') && used(t))
        .map(|i| i + 1)
        .or(line)
}

/// The input line iptables-restore names: "line N failed" (legacy) or
/// "Error occurred at line: N" (nf_tables).
fn failed_line(stderr: &str) -> Option<usize> {
    for marker in ["line ", "line: "] {
        for (i, _) in stderr.match_indices(marker) {
            let digits: String = stderr[i + marker.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(n) = digits.parse() {
                return Some(n);
            }
        }
    }
    None
}

/// Our chains and jumps in iptables-save output of nat and filter. Other tables,
/// chains and rules are ignored; a rule counts as our jump when it sits in a
/// built-in chain and jumps (`-j`/`-g`) to a chain of ours.
pub fn parse_save(text: &str) -> Result<RuleSet, ProxyError> {
    let mut rules = RuleSet::default();
    // None inside a table we do not read (mangle, raw, …) or between tables.
    let mut table: Option<Table> = None;
    let mut in_table = false;
    for (i, line) in text.lines().enumerate() {
        let error = |reason: &'static str| ProxyError::Parse {
            line: i + 1,
            reason,
            text: line.to_string(),
        };
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            if in_table {
                return Err(error("table starts before the previous one's COMMIT"));
            }
            in_table = true;
            table = Table::ALL.into_iter().find(|t| t.name() == name);
            continue;
        }
        if line == "COMMIT" {
            if !in_table {
                return Err(error("COMMIT outside a table"));
            }
            in_table = false;
            table = None;
            continue;
        }
        if !in_table {
            return Err(error("rule or chain outside a table"));
        }
        if let Some(decl) = line.strip_prefix(':') {
            let name = decl
                .split_whitespace()
                .next()
                .ok_or_else(|| error("chain declaration without a name"))?;
            if let Some(t) = table.filter(|_| is_owned(name)) {
                rules
                    .table_mut(t)
                    .chains
                    .entry(name.to_string())
                    .or_default();
            }
            continue;
        }
        let Some(rest) = line.strip_prefix("-A ") else {
            return Err(error("not a chain declaration, rule or COMMIT"));
        };
        let (chain, rule) = rest.split_once(' ').unwrap_or((rest, ""));
        let Some(t) = table else { continue };
        if is_owned(chain) {
            rules
                .table_mut(t)
                .chains
                .entry(chain.to_string())
                .or_default()
                .push(rule.to_string());
        } else if BUILTIN_CHAINS.contains(&chain) {
            let words = split_words(rule).ok_or_else(|| error("unbalanced quotes"))?;
            let target = words
                .windows(2)
                .find(|w| w[0] == "-j" || w[0] == "-g")
                .map(|w| w[1].as_str());
            if target.is_some_and(is_owned) {
                rules
                    .table_mut(t)
                    .jumps
                    .entry(chain.to_string())
                    .or_default()
                    .push(rule.to_string());
            }
        }
    }
    if in_table {
        return Err(ProxyError::Parse {
            line: text.lines().count(),
            reason: "missing COMMIT",
            text: String::new(),
        });
    }
    Ok(rules)
}

/// A rule's words as iptables-restore splits them: double quotes group,
/// a backslash escapes the next character.
fn split_words(rule: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = rule.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                word.push(chars.next()?);
                in_word = true;
            }
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return None;
    }
    if in_word {
        words.push(word);
    }
    Some(words)
}

/// Chains of ours a rule set refers to but does not declare (a bug in a
/// planner would show here before iptables-restore refuses it).
pub fn undeclared_targets(rules: &RuleSet) -> BTreeSet<String> {
    let mut missing = BTreeSet::new();
    for table in Table::ALL {
        let t = rules.table(table);
        for rule in t
            .chains
            .values()
            .flatten()
            .chain(t.jumps.values().flatten())
        {
            for w in split_words(rule).unwrap_or_default().windows(2) {
                if (w[0] == "-j" || w[0] == "-g")
                    && is_owned(&w[1])
                    && !t.chains.contains_key(&w[1])
                {
                    missing.insert(format!("{}/{}", table.name(), w[1]));
                }
            }
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::ruleset::TableRules;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// iptables-save's layout of `rules`, with foreign chains and rules around ours.
    fn save_text(rules: &RuleSet) -> String {
        let mut out = String::from("# Generated by iptables-save v1.8.9 (nf_tables)\n*mangle\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j MARK --set-xmark 0x1/0x1\nCOMMIT\n");
        for table in Table::ALL {
            let t = rules.table(table);
            out.push_str(&format!("*{}\n", table.name()));
            for b in BUILTIN_CHAINS {
                out.push_str(&format!(":{b} ACCEPT [12:345]\n"));
            }
            out.push_str(":CNI-FOREIGN - [0:0]\n");
            for name in t.chains.keys() {
                out.push_str(&format!(":{name} - [0:0]\n"));
            }
            for b in BUILTIN_CHAINS {
                out.push_str(&format!("-A {b} -j CNI-FOREIGN\n"));
                for rule in t.jumps.get(b).into_iter().flatten() {
                    out.push_str(&format!("-A {b} {rule}\n"));
                }
            }
            out.push_str("-A CNI-FOREIGN -m comment --comment \"-j NC-SERVICES\" -j ACCEPT\n");
            for (name, rules) in &t.chains {
                for rule in rules {
                    out.push_str(&format!("-A {name} {rule}\n"));
                }
            }
            out.push_str("COMMIT\n# Completed\n");
        }
        out
    }

    fn chain_name() -> impl Strategy<Value = String> {
        "NC-[A-Z2-7]{1,20}"
    }

    fn rule() -> impl Strategy<Value = String> {
        (any::<String>(), chain_name()).prop_map(|(comment, target)| {
            crate::proxy::ruleset::RuleSpec::new()
                .comment(&comment)
                .jump(&target)
        })
    }

    fn table_rules() -> impl Strategy<Value = TableRules> {
        (
            proptest::collection::btree_map(
                chain_name(),
                proptest::collection::vec(rule(), 0..4),
                0..6,
            ),
            proptest::collection::btree_map(
                proptest::sample::select(BUILTIN_CHAINS.to_vec()).prop_map(String::from),
                proptest::collection::vec(
                    chain_name().prop_map(|c| format!("-m comment --comment \"x y\" -j {c}")),
                    1..3,
                ),
                0..3,
            ),
        )
            .prop_map(|(chains, jumps)| TableRules { chains, jumps })
    }

    proptest! {
        #[test]
        fn parse_reads_back_what_save_prints(nat in table_rules(), filter in table_rules()) {
            let rules = RuleSet { nat, filter };
            prop_assert_eq!(parse_save(&save_text(&rules)).unwrap(), rules);
        }

        #[test]
        fn parser_never_panics(text in "(\\*nat\n|COMMIT\n|:NC-[A-Z]{1,3} - \\[0:0\\]\n|-A [A-Z-]{1,12} [ -~]{0,20}\n|[ -~]{0,10}\n){0,12}") {
            let _ = parse_save(&text);
        }

        #[test]
        fn words_split_like_iptables_restore(comment in any::<String>()) {
            let rule = crate::proxy::ruleset::RuleSpec::new().comment(&comment).jump("NC-X");
            let words = split_words(&rule).unwrap();
            let mut clean: String = comment.chars().map(|c| if (' '..='~').contains(&c) { c } else { '?' }).collect();
            clean.truncate(255);
            prop_assert_eq!(words, vec!["-m".to_string(), "comment".into(), "--comment".into(), clean, "-j".into(), "NC-X".into()]);
        }
    }

    #[test]
    fn parse_ignores_foreign_rules_and_tables() {
        let text = "*filter\n:INPUT ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:NC-CANARY - [0:0]\n-A INPUT -j KUBE-SERVICES\n-A INPUT -m comment --comment \"to NC-X\" -j ACCEPT\n-A INPUT -m conntrack --ctstate NEW -j NC-EXTERNAL-SERVICES\n-A KUBE-SERVICES -j NC-CANARY\nCOMMIT\n";
        let rules = parse_save(text).unwrap();
        let expected = TableRules {
            chains: BTreeMap::from([("NC-CANARY".to_string(), vec![])]),
            jumps: BTreeMap::from([(
                "INPUT".to_string(),
                vec!["-m conntrack --ctstate NEW -j NC-EXTERNAL-SERVICES".to_string()],
            )]),
        };
        assert_eq!(rules.filter, expected);
        assert_eq!(rules.nat, TableRules::default());
    }

    #[test]
    fn parse_errors_name_the_line() {
        let err = parse_save("*nat\n:NC-A - [0:0]\nbogus\nCOMMIT\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(parse_save("*nat\n").is_err());
    }

    #[test]
    fn finds_the_failed_line() {
        assert_eq!(failed_line("iptables-restore: line 17 failed"), Some(17));
        assert_eq!(
            failed_line("iptables-restore v1.8.9 (nf_tables): Chain 'NC-X' does not exist\nError occurred at line: 4\n"),
            Some(4)
        );
        assert_eq!(failed_line("something else"), None);
        let input = "*nat\n:NC-A - [0:0]\n-A NC-A -j NC-GONE\nCOMMIT\n";
        let stderr = "iptables-restore v1.8.9 (nf_tables): Chain 'NC-GONE' does not exist\nError occurred at line: 4\n";
        assert_eq!(blamed_line(input, stderr), Some(3));
        assert_eq!(
            blamed_line(input, "iptables-restore: line 2 failed"),
            Some(2)
        );
    }
}
