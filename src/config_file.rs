//! The configuration file (`relaunch --config FILE`, `relaunch check-config FILE`): a TOML
//! document with the master's settings under `[relaunch]` and one `[program.NAME]` table per
//! program, turned into the same validated [`Config`] the command line gives.
//!
//! One source of truth for values: every per-program key is a long flag of [`Args`], and a
//! program table is turned into that flag's arguments (`ready = "notify"` becomes
//! `--ready=notify`) and parsed by the command line's own clap parser, with the `RELAUNCH_*`
//! variables switched off. A value the command line rejects is rejected here with the same
//! message, prefixed by the file, the line and the key. The keys are read off the parser, so a
//! flag added to [`Args`] is a key of the file at once (per program, unless it is listed in
//! [`MASTER_KEYS`]).
//!
//! The TOML is read with `toml`'s span-keeping document parser, so that every message can
//! name the line of the key (or table) at fault.

use std::borrow::Cow;
use std::ffi::OsString;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{ArgAction, CommandFactory, FromArgMatches};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::cli::Args;
use crate::config::{Config, ProgramConfig, DEFAULT_PRIORITY};
use crate::control::program_name;
use crate::spec::{Host, ListenAddr, ListenSpec};

/// The keys of `[relaunch]`: the master's own settings (each a long flag of [`Args`]), plus
/// `log-level`.
pub const MASTER_KEYS: &[&str] = &[
    "name",
    "control",
    "no-control",
    "metrics",
    "pid-file",
    "daemon",
    "log-level",
];

/// Keys of a program table that are not flags: its command and its place in the start order.
const PROGRAM_ONLY_KEYS: &[&str] = &["command", "priority", "autostart"];

/// Long flags that are neither a master nor a program key: they act on this invocation only.
const NOT_KEYS: &[&str] = &["help", "version", "verbose", "quiet", "config"];

/// A file that cannot be used: where, which key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFileError {
    /// The file, as it was named.
    pub file: PathBuf,
    /// The 1-based line of the key or table at fault, if the error has one.
    pub line: Option<usize>,
    /// The key or table at fault, e.g. `[program.web] ready`.
    pub key: Option<String>,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl fmt::Display for ConfigFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": ")?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for ConfigFileError {}

/// A loaded file: the configuration, and the master's `log-level` if it sets one.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The master's settings and the programs, sorted by `priority` (then by their order in
    /// the file).
    pub config: Config,
    /// `[relaunch] log-level`, if given (`-v`/`-q` and `RELAUNCH_LOG` win over it).
    pub log_level: Option<tracing::Level>,
}

/// Reads and validates the file at `path`: the configuration to run.
pub fn load(path: &Path) -> Result<Config, ConfigFileError> {
    load_file(path).map(|loaded| loaded.config)
}

/// Reads and validates the file at `path`, with its log level.
pub fn load_file(path: &Path) -> Result<Loaded, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigFileError {
        file: path.to_owned(),
        line: None,
        key: None,
        message: format!("cannot read the configuration file: {e}"),
    })?;
    parse(path, &text)
}

/// Validates `text`, the contents of the file `path` (named in messages; its stem is the
/// master's default name).
pub fn parse(path: &Path, text: &str) -> Result<Loaded, ConfigFileError> {
    Parser { path, text }.parse()
}

/// `relaunch check-config FILE`: prints the resolved programs on stdout (exit 0) or the error
/// on stderr (exit 2).
pub fn check(path: &Path) -> i32 {
    match load_file(path) {
        Ok(loaded) => {
            print!("{}", describe(path, &loaded.config));
            0
        }
        Err(e) => {
            eprintln!("relaunch: error: {e}");
            2
        }
    }
}

/// The resolved configuration, as `check-config` prints it: one block per program, in start
/// order.
pub fn describe(path: &Path, config: &Config) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "{}: ok: master {:?}, {} program{}\n",
        path.display(),
        config.name,
        config.programs.len(),
        if config.programs.len() == 1 { "" } else { "s" }
    );
    for p in &config.programs {
        let command: Vec<String> = std::iter::once(&p.command.program)
            .chain(&p.command.args)
            .map(|a| format!("{:?}", a.to_string_lossy()))
            .collect();
        let listen: Vec<String> = p
            .listen
            .iter()
            .map(|l| format!("{:?}", l.to_string()))
            .collect();
        let _ = writeln!(out, "[program.{}]", p.name);
        let _ = writeln!(out, "  command   = [{}]", command.join(", "));
        let _ = writeln!(out, "  listen    = [{}]", listen.join(", "));
        let _ = writeln!(out, "  priority  = {}", p.priority);
        let _ = writeln!(out, "  autostart = {}", p.autostart);
        let ready = match p.ready {
            crate::config::ReadyMode::Timer => "timer".to_owned(),
            crate::config::ReadyMode::Notify => "notify".to_owned(),
            crate::config::ReadyMode::Fd(n) => format!("fd:{n}"),
        };
        let _ = writeln!(out, "  ready     = {ready:?}");
        let _ = writeln!(out, "  restart   = {:?}", p.settings.restart.to_string());
        if p.settings.workers > 1 {
            let _ = writeln!(out, "  workers   = {}", p.settings.workers);
            let _ = writeln!(
                out,
                "  reload-strategy = {:?}",
                p.settings.reload_strategy.to_string()
            );
        }
    }
    out
}

/// What a flag's value looks like in the file, from how clap takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// A switch: `true` or `false`.
    Bool,
    /// One value: a string or a number.
    One,
    /// A repeatable flag: an array of strings (or one string).
    Many,
}

/// The keys a table may hold, with the shape of each value.
struct Keys {
    master: Vec<(String, Shape)>,
    program: Vec<(String, Shape)>,
}

impl Keys {
    fn new() -> Keys {
        let mut master = Vec::new();
        let mut program = Vec::new();
        for arg in Args::command().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if NOT_KEYS.contains(&long) {
                continue;
            }
            let shape = match arg.get_action() {
                ArgAction::SetTrue | ArgAction::SetFalse => Shape::Bool,
                ArgAction::Append => Shape::Many,
                _ => Shape::One,
            };
            if MASTER_KEYS.contains(&long) {
                master.push((long.to_owned(), shape));
            } else if !arg.is_positional() {
                program.push((long.to_owned(), shape));
            }
        }
        master.push(("log-level".to_owned(), Shape::One));
        for key in PROGRAM_ONLY_KEYS {
            program.push(((*key).to_owned(), Shape::One));
        }
        Keys { master, program }
    }

    fn shape(list: &[(String, Shape)], key: &str) -> Option<Shape> {
        list.iter().find(|(k, _)| k == key).map(|(_, s)| *s)
    }
}

/// The parse of one file.
struct Parser<'a> {
    path: &'a Path,
    text: &'a str,
}

/// A program table on its way to a [`ProgramConfig`].
struct Table<'t, 'i> {
    /// `[program.web]` or `[relaunch]`, for messages.
    title: String,
    /// Where the table's header is.
    span: Range<usize>,
    /// Its entries in file order.
    entries: Vec<(&'t Spanned<Cow<'i, str>>, &'t Spanned<DeValue<'i>>)>,
}

impl<'a> Parser<'a> {
    fn error(
        &self,
        span: Option<Range<usize>>,
        key: Option<String>,
        message: String,
    ) -> ConfigFileError {
        ConfigFileError {
            file: self.path.to_owned(),
            line: span.map(|s| self.line(s.start)),
            key,
            message,
        }
    }

    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    fn parse(&self) -> Result<Loaded, ConfigFileError> {
        let doc = DeTable::parse(self.text).map_err(|e| {
            let message = e.message().trim_end().replace('\n', "; ");
            let message = if message.contains("duplicate key") {
                let what = e
                    .span()
                    .and_then(|s| self.text.get(s))
                    .map(|t| format!(" {:?}", t.trim()))
                    .unwrap_or_default();
                format!(
                    "invalid TOML: {message}{what}: a table or key is defined twice (each program name may be used once)"
                )
            } else {
                format!("invalid TOML: {message}")
            };
            self.error(e.span(), None, message)
        })?;
        let keys = Keys::new();
        let doc = doc.get_ref();
        let mut master_table = None;
        let mut programs_table = None;
        for (key, value) in sorted(doc) {
            match key.get_ref().as_ref() {
                "relaunch" => master_table = Some((key, value)),
                "program" => programs_table = Some((key, value)),
                other if !value.get_ref().is_table() => {
                    let place = if Keys::shape(&keys.master, other).is_some() {
                        " (it goes under [relaunch])".to_owned()
                    } else if Keys::shape(&keys.program, other).is_some() {
                        " (it goes under [program.NAME])".to_owned()
                    } else {
                        " (expected the tables [relaunch] and [program.NAME])".to_owned()
                    };
                    return Err(self.error(
                        Some(key.span()),
                        None,
                        format!("unknown key {other:?} outside any table{place}"),
                    ));
                }
                other => {
                    return Err(self.error(
                        Some(key.span()),
                        None,
                        format!(
                            "unknown section [{other}]{} (expected [relaunch] and [program.NAME])",
                            did_you_mean(other, ["relaunch", "program"].into_iter())
                        ),
                    ))
                }
            }
        }
        let master = match master_table {
            Some((key, value)) => Some(self.table("[relaunch]".to_owned(), key, value)?),
            None => None,
        };
        let (master_config, log_level) = self.master(master.as_ref(), &keys)?;

        let Some((pkey, pvalue)) = programs_table else {
            return Err(self.error(
                None,
                None,
                "no programs (add a [program.NAME] table with command = [\"/path/to/server\", \"arg\"])"
                    .to_owned(),
            ));
        };
        let DeValue::Table(programs) = pvalue.get_ref() else {
            return Err(self.error(
                Some(pkey.span()),
                Some("program".to_owned()),
                format!(
                    "expected tables [program.NAME], found {}",
                    pvalue.get_ref().type_str()
                ),
            ));
        };
        if programs.is_empty() {
            return Err(self.error(
                Some(pkey.span()),
                None,
                "no programs (add a [program.NAME] table with command = [\"/path/to/server\", \"arg\"])"
                    .to_owned(),
            ));
        }
        let mut parsed: Vec<(ProgramConfig, Range<usize>)> = Vec::new();
        for (name, value) in sorted(programs) {
            let table = self.table(format!("[program.{}]", name.get_ref()), name, value)?;
            let program = self.program(name, &table, &keys)?;
            self.check_addresses(&parsed, &program, &table)?;
            parsed.push((program, table.span));
        }
        // Start order: ascending priority, then as written (the sort is stable).
        parsed.sort_by_key(|(p, _)| p.priority);
        let mut config = master_config;
        config.programs = parsed.into_iter().map(|(p, _)| p).collect();
        Ok(Loaded { config, log_level })
    }

    fn table<'t, 'i>(
        &self,
        title: String,
        key: &'t Spanned<Cow<'i, str>>,
        value: &'t Spanned<DeValue<'i>>,
    ) -> Result<Table<'t, 'i>, ConfigFileError> {
        match value.get_ref() {
            DeValue::Table(t) => Ok(Table {
                title,
                span: key.span(),
                entries: sorted(t),
            }),
            other => Err(self.error(
                Some(key.span()),
                None,
                format!("{title} must be a table, found {}", other.type_str()),
            )),
        }
    }

    /// The master's settings: `[relaunch]` through the command line's parser, with a
    /// placeholder program.
    fn master(
        &self,
        table: Option<&Table<'_, '_>>,
        keys: &Keys,
    ) -> Result<(Config, Option<tracing::Level>), ConfigFileError> {
        let mut argv: Vec<OsString> = vec!["relaunch".into()];
        let mut named = false;
        let mut log_level = None;
        if let Some(table) = table {
            for (key, value) in &table.entries {
                let k = key.get_ref().as_ref();
                if k == "log-level" {
                    log_level = Some(self.log_level(table, key, value)?);
                    continue;
                }
                let Some(shape) = Keys::shape(&keys.master, k) else {
                    return Err(self.unknown_key(
                        table,
                        key,
                        &keys.master,
                        &keys.program,
                        "[program.NAME]",
                    ));
                };
                named |= k == "name";
                self.push_flag(&mut argv, table, key, value, shape)?;
            }
        }
        if !named {
            // The default name: the file's stem, made into a usable name.
            let stem = self.path.file_stem().unwrap_or_default();
            argv.push("--name".into());
            argv.push(program_name(stem).into());
        }
        argv.push("--".into());
        argv.push("relaunch-master".into());
        let empty = Table {
            title: "[relaunch]".to_owned(),
            span: 0..0,
            entries: Vec::new(),
        };
        let table = table.unwrap_or(&empty);
        let mut config = self.run_clap(argv, table, None)?;
        config.control.default_name = !named;
        config.programs.clear();
        Ok((config, log_level))
    }

    fn log_level(
        &self,
        table: &Table<'_, '_>,
        key: &Spanned<Cow<'_, str>>,
        value: &Spanned<DeValue<'_>>,
    ) -> Result<tracing::Level, ConfigFileError> {
        let at = || Some(format!("{} {}", table.title, key.get_ref()));
        let levels = "expected error, warn, info, debug or trace";
        match value.get_ref() {
            DeValue::String(s) => s.parse::<tracing::Level>().map_err(|_| {
                self.error(
                    Some(value.span()),
                    at(),
                    format!("{s:?} is not a log level ({levels})"),
                )
            }),
            other => Err(self.error(
                Some(value.span()),
                at(),
                format!("expected a string ({levels}), found {}", other.type_str()),
            )),
        }
    }

    /// One program: its table through the command line's parser, then its own keys.
    fn program(
        &self,
        name: &Spanned<Cow<'_, str>>,
        table: &Table<'_, '_>,
        keys: &Keys,
    ) -> Result<ProgramConfig, ConfigFileError> {
        let mut argv: Vec<OsString> = vec!["relaunch".into()];
        let mut command: Option<Vec<OsString>> = None;
        let mut priority = DEFAULT_PRIORITY;
        let mut autostart = true;
        for (key, value) in &table.entries {
            let k = key.get_ref().as_ref();
            let at = || Some(format!("{} {k}", table.title));
            match k {
                "command" => command = Some(self.command(table, key, value)?),
                "priority" => {
                    priority = match value.get_ref() {
                        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                            .ok()
                            .and_then(|n| u32::try_from(n).ok())
                            .filter(|n| *n <= i32::MAX as u32)
                            .ok_or_else(|| {
                                self.error(
                                    Some(value.span()),
                                    at(),
                                    format!(
                                        "{} is not a priority (expected a whole number from 0 to {}; lower starts first)",
                                        i.as_str(),
                                        i32::MAX
                                    ),
                                )
                            })?,
                        other => {
                            return Err(self.error(
                                Some(value.span()),
                                at(),
                                format!(
                                    "expected a whole number from 0 to {} (lower starts first), found {}",
                                    i32::MAX,
                                    other.type_str()
                                ),
                            ))
                        }
                    }
                }
                "autostart" => {
                    autostart = match value.get_ref() {
                        DeValue::Boolean(b) => *b,
                        other => {
                            return Err(self.error(
                                Some(value.span()),
                                at(),
                                format!("expected true or false, found {}", other.type_str()),
                            ))
                        }
                    }
                }
                _ => {
                    let Some(shape) = Keys::shape(&keys.program, k) else {
                        return Err(self.unknown_key(table, key, &keys.program, &keys.master, "[relaunch]"));
                    };
                    self.push_flag(&mut argv, table, key, value, shape)?;
                }
            }
        }
        let Some(command) = command else {
            return Err(self.error(
                Some(table.span.clone()),
                Some(table.title.clone()),
                "no command (add command = [\"/path/to/server\", \"arg\"])".to_owned(),
            ));
        };
        // The program's name is checked as `--name` is.
        argv.push("--name".into());
        argv.push(name.get_ref().as_ref().into());
        argv.push("--".into());
        argv.extend(command);
        let mut config = self.run_clap(argv, table, Some(name.span()))?;
        let mut program = config.programs.remove(0);
        program.priority = priority;
        program.autostart = autostart;
        Ok(program)
    }

    fn command(
        &self,
        table: &Table<'_, '_>,
        key: &Spanned<Cow<'_, str>>,
        value: &Spanned<DeValue<'_>>,
    ) -> Result<Vec<OsString>, ConfigFileError> {
        let at = Some(format!("{} {}", table.title, key.get_ref()));
        let expected = "expected an array of strings, the program and its arguments, like [\"/srv/bin/server\", \"--port\", \"8080\"] (no shell splitting)";
        let DeValue::Array(items) = value.get_ref() else {
            return Err(self.error(
                Some(value.span()),
                at,
                format!("{expected}, found {}", value.get_ref().type_str()),
            ));
        };
        let mut argv = Vec::new();
        for item in items {
            match item.get_ref() {
                DeValue::String(s) => argv.push(OsString::from(s.as_ref())),
                other => {
                    return Err(self.error(
                        Some(item.span()),
                        at,
                        format!("{expected}, found {} in the array", other.type_str()),
                    ))
                }
            }
        }
        match argv.first() {
            None => Err(self.error(
                Some(value.span()),
                at,
                format!("{expected}, found an empty array"),
            )),
            Some(p) if p.is_empty() => Err(self.error(
                Some(value.span()),
                at,
                "the program (the first element) is an empty string".to_owned(),
            )),
            Some(_) => Ok(argv),
        }
    }

    /// Appends the flag for `key = value` to `argv`, checking the value's type.
    fn push_flag(
        &self,
        argv: &mut Vec<OsString>,
        table: &Table<'_, '_>,
        key: &Spanned<Cow<'_, str>>,
        value: &Spanned<DeValue<'_>>,
        shape: Shape,
    ) -> Result<(), ConfigFileError> {
        let k = key.get_ref().as_ref();
        let at = || Some(format!("{} {k}", table.title));
        let wrong = |expected: &str, found: &DeValue<'_>, span: Range<usize>| {
            self.error(
                Some(span),
                at(),
                format!("expected {expected}, found {}", found.type_str()),
            )
        };
        match (shape, value.get_ref()) {
            (Shape::Bool, DeValue::Boolean(b)) => {
                if *b {
                    argv.push(format!("--{k}").into());
                }
            }
            (Shape::Bool, other) => return Err(wrong("true or false", other, value.span())),
            (Shape::One, v) => match scalar(v) {
                Some(s) => argv.push(format!("--{k}={s}").into()),
                None => return Err(wrong("a string or a number", v, value.span())),
            },
            (Shape::Many, DeValue::Array(items)) => {
                for item in items {
                    match scalar(item.get_ref()) {
                        Some(s) => argv.push(format!("--{k}={s}").into()),
                        None => {
                            return Err(wrong("an array of strings", item.get_ref(), item.span()))
                        }
                    }
                }
            }
            (Shape::Many, DeValue::Table(t)) if k == "env" => {
                // `env = { A = "1" }`: each entry is `A=1`.
                for (name, v) in sorted(t) {
                    match scalar(v.get_ref()) {
                        Some(s) => argv.push(format!("--env={}={s}", name.get_ref()).into()),
                        None => return Err(wrong("a string or a number", v.get_ref(), v.span())),
                    }
                }
            }
            (Shape::Many, v) => match scalar(v) {
                Some(s) => argv.push(format!("--{k}={s}").into()),
                None => return Err(wrong("an array of strings", v, value.span())),
            },
        }
        Ok(())
    }

    /// Parses `argv` with the command line's parser (without the `RELAUNCH_*` variables),
    /// naming the key of a rejected value.
    fn run_clap(
        &self,
        argv: Vec<OsString>,
        table: &Table<'_, '_>,
        name_span: Option<Range<usize>>,
    ) -> Result<Config, ConfigFileError> {
        let cmd = Args::command().mut_args(|a| a.env(None));
        let parsed = cmd
            .try_get_matches_from(argv)
            .and_then(|m| Args::from_arg_matches(&m))
            .and_then(Args::validate);
        match parsed {
            Ok(args) => Ok(args.into_config()),
            Err(e) => Err(self.clap_error(&e, table, name_span)),
        }
    }

    fn clap_error(
        &self,
        e: &clap::Error,
        table: &Table<'_, '_>,
        name_span: Option<Range<usize>>,
    ) -> ConfigFileError {
        // Which key: the flag the error names (`--ready <MODE>`).
        let flag = match e.get(ContextKind::InvalidArg) {
            Some(ContextValue::String(s)) => s
                .strip_prefix("--")
                .map(|s| s.split([' ', '=']).next().unwrap_or(s).to_owned()),
            _ => None,
        };
        let entry = flag.as_deref().and_then(|f| {
            table
                .entries
                .iter()
                .find(|(k, _)| k.get_ref().as_ref() == f || (f == "env" && k.get_ref() == "env"))
        });
        let message = match (e.kind(), std::error::Error::source(e)) {
            (ErrorKind::ValueValidation, Some(inner)) => {
                // The parsers' own messages name the value; the standard ones (numbers) do not.
                let inner = inner.to_string();
                match e.get(ContextKind::InvalidValue) {
                    Some(ContextValue::String(v)) if !inner.contains(v.as_str()) => {
                        format!("invalid value {v:?}: {inner}")
                    }
                    _ => inner,
                }
            }
            (ErrorKind::InvalidValue, _) => {
                let value = match e.get(ContextKind::InvalidValue) {
                    Some(ContextValue::String(s)) => s.clone(),
                    _ => String::new(),
                };
                let valid = match e.get(ContextKind::ValidValue) {
                    Some(ContextValue::Strings(v)) => v.join(", "),
                    _ => String::new(),
                };
                format!("{value:?} is not valid (expected one of: {valid})")
            }
            (ErrorKind::MissingRequiredArgument, _) => match e.get(ContextKind::InvalidArg) {
                Some(ContextValue::Strings(missing)) => format!(
                    "also needs {} (set it in the same table)",
                    flags_to_keys(&missing.join(" or "))
                        .trim_matches(|c| c == '<' || c == '>')
                        .replace('|', " or ")
                ),
                _ => flags_to_keys(&one_line(&e.render().to_string())),
            },
            _ => flags_to_keys(&one_line(&e.render().to_string())),
        };
        match (flag.as_deref(), entry) {
            (Some("name"), None) if name_span.is_some() => self.error(
                name_span,
                Some(table.title.clone()),
                format!("the program name {message}"),
            ),
            (_, Some((key, value))) => self.error(
                Some(value.span()),
                Some(format!("{} {}", table.title, key.get_ref())),
                message,
            ),
            _ => self.error(Some(table.span.clone()), Some(table.title.clone()), message),
        }
    }

    fn unknown_key(
        &self,
        table: &Table<'_, '_>,
        key: &Spanned<Cow<'_, str>>,
        valid: &[(String, Shape)],
        elsewhere: &[(String, Shape)],
        other_table: &str,
    ) -> ConfigFileError {
        let k = key.get_ref().as_ref();
        let message = if Keys::shape(elsewhere, k).is_some() {
            format!(
                "{k:?} does not belong in {}: it goes under {other_table}",
                table.title
            )
        } else {
            let suggestion = did_you_mean(k, valid.iter().map(|(k, _)| k.as_str()));
            if suggestion.is_empty() {
                let all: Vec<&str> = valid.iter().map(|(k, _)| k.as_str()).collect();
                format!("unknown key {k:?} (expected one of: {})", all.join(", "))
            } else {
                format!("unknown key {k:?}{suggestion}")
            }
        };
        self.error(Some(key.span()), Some(table.title.clone()), message)
    }

    /// A program's address that another program binds already.
    fn check_addresses(
        &self,
        before: &[(ProgramConfig, Range<usize>)],
        program: &ProgramConfig,
        table: &Table<'_, '_>,
    ) -> Result<(), ConfigFileError> {
        for spec in &program.listen {
            for (other, other_span) in before {
                if let Some(theirs) = other.listen.iter().find(|o| same_address(o, spec)) {
                    let span = table
                        .entries
                        .iter()
                        .find(|(k, _)| k.get_ref() == "listen")
                        .map(|(_, v)| v.span());
                    return Err(self.error(
                        span,
                        Some(format!("{} listen", table.title)),
                        format!(
                            "{:?} is also bound by program {:?} ({:?}, line {}): two programs cannot bind the same address",
                            spec.to_string(),
                            other.name,
                            theirs.to_string(),
                            self.line(other_span.start)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Whether two programs' sockets would take the same address (port 0 never does).
fn same_address(a: &ListenSpec, b: &ListenSpec) -> bool {
    match (&a.addr, &b.addr) {
        (
            ListenAddr::Inet {
                proto: pa,
                host: ha,
                port: a_port,
                ..
            },
            ListenAddr::Inet {
                proto: pb,
                host: hb,
                port: b_port,
                ..
            },
        ) => {
            pa == pb
                && a_port == b_port
                && *a_port != 0
                && (ha == hb || *ha == Host::Any || *hb == Host::Any)
        }
        (ListenAddr::Unix { path: pa, .. }, ListenAddr::Unix { path: pb, .. }) => pa == pb,
        (ListenAddr::Fd(a), ListenAddr::Fd(b)) => a == b,
        _ => false,
    }
}

/// A table's entries in the order of the file.
fn sorted<'t, 'i>(
    table: &'t DeTable<'i>,
) -> Vec<(&'t Spanned<Cow<'i, str>>, &'t Spanned<DeValue<'i>>)> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    entries
}

/// A string, integer or float as the flag's text.
fn scalar(value: &DeValue<'_>) -> Option<String> {
    match value {
        DeValue::String(s) => Some(s.to_string()),
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
            .ok()
            .map(|n| n.to_string()),
        DeValue::Float(f) => Some(f.as_str().to_owned()),
        _ => None,
    }
}

/// ` (did you mean "ready"?)` when a valid key is close to `key`, else empty.
fn did_you_mean<'k>(key: &str, valid: impl Iterator<Item = &'k str>) -> String {
    let best = valid
        .map(|v| (edit_distance(key, v), v))
        .filter(|(d, v)| *d <= 2.max(v.len() / 4) && *d < v.len())
        .min_by_key(|(d, _)| *d);
    match best {
        Some((_, v)) => format!(" (did you mean {v:?}?)"),
        None => String::new(),
    }
}

/// Levenshtein distance.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// A clap message with the flags written as keys: `'--stderr-log <FILE>'` becomes
/// `'stderr-log'`.
fn flags_to_keys(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("--") {
        out.push_str(&rest[..at]);
        let flag = &rest[at + 2..];
        let end = flag
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or(flag.len());
        out.push_str(&flag[..end]);
        rest = &flag[end..];
        // Drop a value placeholder such as ` <FILE>`.
        if let Some(after) = rest.strip_prefix(" <") {
            if let Some(close) = after.find('>') {
                rest = &after[close + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A rendered clap error on one line, without its usage block.
fn one_line(rendered: &str) -> String {
    let parts: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:"))
        .filter(|l| !l.is_empty())
        .collect();
    parts.join(" ").trim_start_matches("error: ").to_owned()
}

#[cfg(test)]
#[path = "config_file_tests.rs"]
mod tests;
