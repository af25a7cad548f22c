//! Where option values come from: command-line flags, `SSELOOP_<NAME>` environment variables, a
//! TOML file (`--config FILE`, keys are the long flag names) and the defaults, in that order of
//! precedence. The clap definitions of [`Config`] are the one list of options: this module
//! derives the variable names and file keys from them and checks every value with the flag's own
//! parser, so the ranges and messages are the same whatever the source; an error names where
//! the value came from (the file, its line and key; or the variable), never a flag the operator
//! did not type.
//!
//! A load is a pure function of the command line, the environment and the file's text, so a
//! reload (SIGHUP) is the same call again: [`Sources`] keeps the command line and reads the
//! file anew.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command, CommandFactory, FromArgMatches};

use super::{Config, RedisUrl};

/// Options that are not settings: they are never read from the file or listed by
/// `--print-config`.
const META: [&str; 6] = [
    "help",
    "version",
    "config",
    "check-config",
    "print-config",
    "generate",
];

/// Options whose value is a secret: `--print-config` shows `<redacted>`.
pub const SECRETS: [&str; 5] = [
    "publish-token",
    "subscribe-token",
    "jwt-secret",
    "admin-token",
    "backplane-sentinel-password",
];

/// Where an option's effective value came from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    /// Nobody set it.
    Default,
    /// The configuration file, at this line.
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line of the key.
        line: usize,
    },
    /// An environment variable.
    Env(String),
    /// A command-line flag.
    Flag,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::Env(var) => f.write_str(var),
            Origin::Flag => f.write_str("command line"),
        }
    }
}

/// A configuration that cannot be loaded: the message names the source of the bad value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError(pub String);

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LoadError {}

/// A loaded configuration and where each setting came from.
#[derive(Debug)]
pub struct Loaded {
    /// The effective configuration (not yet validated as a whole: see `Config::validate`).
    pub config: Config,
    /// Long name → origin, for every setting.
    pub origins: BTreeMap<String, Origin>,
    /// Long name → effective value as text (`None`: unset), for `--print-config`.
    values: BTreeMap<String, Option<String>>,
}

/// The environment variable of option `long`: `max-queue-bytes` → `SSELOOP_MAX_QUEUE_BYTES`.
pub fn env_var(long: &str) -> String {
    format!("SSELOOP_{}", long.to_ascii_uppercase().replace('-', "_"))
}

/// Every setting of the command (long name, arg), in `--help` order: what the file, the
/// environment and `--print-config` know.
pub fn settings(cmd: &Command) -> impl Iterator<Item = (&str, &Arg)> {
    cmd.get_arguments()
        .filter_map(|a| a.get_long().map(|l| (l, a)))
        .filter(|(l, _)| !META.contains(l))
}

fn is_flag(arg: &Arg) -> bool {
    !arg.get_action().takes_values()
}

/// The options table of docs/OPTIONS.md (`sseloop --generate markdown`): every setting with its
/// variable, default and help, in `--help` order.
pub fn options_markdown(cmd: &Command) -> String {
    let mut out = String::from("| option | environment | default | meaning |\n|---|---|---|---|\n");
    for (long, arg) in settings(cmd) {
        let value = match arg.get_value_names() {
            Some(names) if !is_flag(arg) => format!(" {}", names.join(" ")),
            _ => String::new(),
        };
        let default: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| format!("`{}`", v.to_string_lossy()))
            .collect();
        let help = arg
            .get_help()
            .map(|h| h.to_string())
            .unwrap_or_default()
            .replace('|', "\\|")
            .replace('\n', " ");
        out.push_str(&format!(
            "| `--{long}{value}` | `{}` | {} | {help} |\n",
            env_var(long),
            if default.is_empty() {
                "".to_string()
            } else {
                default.join(", ")
            },
        ));
    }
    out
}

/// The command line and environment a configuration was loaded from; [`Sources::load`] reads
/// the configuration file each time it is called.
#[derive(Clone, Debug)]
pub struct Sources {
    args: Vec<OsString>,
    env: BTreeMap<String, OsString>,
}

impl Sources {
    /// This process's command line and `SSELOOP_*` environment.
    pub fn from_process() -> Sources {
        Sources::from_env_with_args(std::env::args_os().collect())
    }

    /// The command line `args` (program name first) with this process's `SSELOOP_*`
    /// environment (the C API's `sseloop_config_parse_args`).
    pub fn from_env_with_args(args: Vec<OsString>) -> Sources {
        Sources::new(
            args,
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v)))
                .filter(|(k, _)| k.starts_with("SSELOOP_")),
        )
    }

    /// A command line (program name first) and environment.
    pub fn new(args: Vec<OsString>, env: impl IntoIterator<Item = (String, OsString)>) -> Sources {
        Sources {
            args,
            env: env.into_iter().collect(),
        }
    }

    /// The configuration file named by `--config` or `SSELOOP_CONFIG`, if any.
    pub fn config_path(&self) -> Result<Option<PathBuf>, clap::Error> {
        let cli = Config::command().try_get_matches_from(&self.args)?;
        let flag = cli.get_one::<PathBuf>("config").cloned();
        Ok(flag.or_else(|| self.env.get("SSELOOP_CONFIG").map(PathBuf::from)))
    }

    /// Loads the configuration: flags over environment over file over defaults. A clap error is
    /// a command-line mistake (print it as clap does, with usage); a [`LoadError`] names the
    /// file line or variable at fault.
    pub fn load(&self) -> Result<Result<Loaded, LoadError>, clap::Error> {
        let cmd = Config::command();
        let cli = cmd.clone().try_get_matches_from(&self.args)?;
        let path = cli
            .get_one::<PathBuf>("config")
            .cloned()
            .or_else(|| self.env.get("SSELOOP_CONFIG").map(PathBuf::from));
        let file = match &path {
            None => FileValues::default(),
            Some(p) => match FileValues::read(p, &cmd) {
                Ok(f) => f,
                Err(e) => return Ok(Err(e)),
            },
        };
        Ok(self.merge(&cmd, &cli, &file))
    }

    fn merge(
        &self,
        cmd: &Command,
        cli: &ArgMatches,
        file: &FileValues,
    ) -> Result<Loaded, LoadError> {
        let mut argv: Vec<OsString> = vec![self
            .args
            .first()
            .cloned()
            .unwrap_or_else(|| "sseloop".into())];
        let mut origins = BTreeMap::new();
        for (long, arg) in settings(cmd) {
            let id = arg.get_id().as_str();
            let from_cli = cli.value_source(id) == Some(ValueSource::CommandLine);
            let var = env_var(long);
            let origin = if from_cli {
                Origin::Flag
            } else if let Some(value) = self.env.get(&var) {
                let text = value
                    .to_str()
                    .ok_or_else(|| LoadError(format!("{var}: not valid UTF-8")))?;
                push_value(&mut argv, arg, long, text)
                    .map_err(|why| LoadError(format!("{var}={text:?}: {why}")))?;
                Origin::Env(var)
            } else if let Some((line, text)) = file.get(long) {
                let path = file.path.clone().unwrap_or_default();
                push_value(&mut argv, arg, long, text).map_err(|why| {
                    LoadError(format!("{}:{line}: {long}: {why}", path.display()))
                })?;
                Origin::File { path, line }
            } else {
                Origin::Default
            };
            origins.insert(long.to_string(), origin);
        }
        // The command line goes last: with `args_override_self`, the last occurrence wins.
        argv.extend(self.args.iter().skip(1).cloned());
        let matches = cmd
            .clone()
            .try_get_matches_from(&argv)
            .map_err(|e| self.blame(&e, &origins))?;
        let mut config =
            Config::from_arg_matches(&matches).map_err(|e| LoadError(e.to_string()))?;
        resolve_secret_files(&mut config, &mut origins)?;
        let mut values: BTreeMap<String, Option<String>> = settings(cmd)
            .map(|(long, arg)| (long.to_string(), effective(&matches, arg)))
            .collect();
        // Secrets read from files are set (and redacted) like the plain option.
        for (key, set) in [
            ("publish-token", config.publish_token.is_some()),
            ("subscribe-token", config.subscribe_token.is_some()),
            ("jwt-secret", config.jwt_secret.is_some()),
            ("admin-token", config.admin_token.is_some()),
            (
                "backplane-sentinel-password",
                config.backplane_sentinel_password.is_some(),
            ),
        ] {
            if set {
                values.insert(key.to_string(), Some(String::new()));
            }
        }
        Ok(Loaded {
            config,
            origins,
            values,
        })
    }
}

/// Reads the `*-file` forms of the secrets. A file and the plain option given at the same level
/// (both flags, say) is an error; otherwise the higher level wins, as for any option.
fn resolve_secret_files(
    config: &mut Config,
    origins: &mut BTreeMap<String, Origin>,
) -> Result<(), LoadError> {
    let pairs: [(&str, Option<PathBuf>, &mut Option<String>); 5] = [
        (
            "publish-token",
            config.publish_token_file.clone(),
            &mut config.publish_token,
        ),
        (
            "subscribe-token",
            config.subscribe_token_file.clone(),
            &mut config.subscribe_token,
        ),
        (
            "jwt-secret",
            config.jwt_secret_file.clone(),
            &mut config.jwt_secret,
        ),
        (
            "admin-token",
            config.admin_token_file.clone(),
            &mut config.admin_token,
        ),
        (
            "backplane-sentinel-password",
            config.backplane_sentinel_password_file.clone(),
            &mut config.backplane_sentinel_password,
        ),
    ];
    for (key, file, slot) in pairs {
        let Some(path) = file else { continue };
        let origin = |k: &str| origins.get(k).cloned().unwrap_or(Origin::Default);
        let (plain, from_file) = (origin(key), origin(&format!("{key}-file")));
        if plain.rank() > from_file.rank() {
            continue;
        }
        if plain.rank() == from_file.rank() {
            return Err(LoadError(format!(
                "{key} and {key}-file are both set ({from_file}): give one"
            )));
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| LoadError(format!("{key}-file {}: {e}", path.display())))?;
        let secret = text.lines().next().unwrap_or("").trim().to_string();
        if secret.is_empty() {
            return Err(LoadError(format!(
                "{key}-file {}: the first line is empty",
                path.display()
            )));
        }
        *slot = Some(secret);
        origins.insert(key.to_string(), from_file);
    }
    Ok(())
}

impl Origin {
    /// The precedence level alone (two lines of one file are the same level).
    fn rank(&self) -> u8 {
        match self {
            Origin::Default => 0,
            Origin::File { .. } => 1,
            Origin::Env(_) => 2,
            Origin::Flag => 3,
        }
    }
}

impl Sources {
    /// A parse error of the merged arguments, said of the source of the bad value: clap checks
    /// the file's and the environment's values with the flag's own parser (they come first in
    /// the arguments, so they are checked first), and names the flag; this names the variable,
    /// or the file, line and key.
    fn blame(&self, e: &clap::Error, origins: &BTreeMap<String, Origin>) -> LoadError {
        use clap::error::{ContextKind, ContextValue};
        let arg = match e.get(ContextKind::InvalidArg) {
            Some(ContextValue::String(s)) => s.clone(),
            _ => String::new(),
        };
        let long = arg
            .trim_start_matches("--")
            .split([' ', '='])
            .next()
            .unwrap_or("");
        let why = parser_message(e, long);
        match origins.get(long) {
            Some(Origin::Env(var)) => {
                let value = self.env.get(var).map(|v| v.to_string_lossy().into_owned());
                LoadError(format!("{var}={:?}: {why}", value.unwrap_or_default()))
            }
            Some(Origin::File { path, line }) => {
                LoadError(format!("{}:{line}: {long}: {why}", path.display()))
            }
            _ => LoadError(first_line(&e.to_string())),
        }
    }
}

/// Appends `--long value`, or `--long` for a flag set to true (the value itself is checked by
/// the flag's parser when the merged arguments are parsed; see [`Sources::blame`]).
fn push_value(argv: &mut Vec<OsString>, arg: &Arg, long: &str, text: &str) -> Result<(), String> {
    if is_flag(arg) {
        match text.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => argv.push(format!("--{long}").into()),
            "0" | "false" | "no" | "off" | "" => {}
            _ => return Err("expected true or false".into()),
        }
        return Ok(());
    }
    argv.push(format!("--{long}").into());
    argv.push(text.into());
    Ok(())
}

/// The message of a value parser's error, without clap's framing or the flag's name (the
/// caller names the source instead).
fn parser_message(e: &clap::Error, long: &str) -> String {
    use std::error::Error as _;
    let inner = e
        .source()
        .map(|s| s.to_string())
        .unwrap_or_else(|| first_line(&e.to_string()));
    let flag = format!("--{long} ");
    inner.strip_prefix(&flag).unwrap_or(&inner).to_string()
}

fn first_line(s: &str) -> String {
    s.lines()
        .next()
        .unwrap_or("")
        .trim_start_matches("error: ")
        .to_string()
}

/// An option's effective value as text, as `--print-config` shows it.
fn effective(matches: &ArgMatches, arg: &Arg) -> Option<String> {
    let id = arg.get_id().as_str();
    if is_flag(arg) {
        return Some(matches.get_flag(id).to_string());
    }
    let raw: Vec<String> = matches
        .get_raw(id)?
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    Some(raw.join(","))
}

impl Loaded {
    /// The effective configuration as TOML, one `key = value` per setting with its origin as
    /// a comment; secrets are shown as `<redacted>`, unset options as comments.
    pub fn to_toml(&self) -> String {
        let mut out = String::from("# sseloop effective configuration (--print-config)\n");
        for (key, value) in &self.values {
            let origin = self.origins.get(key).cloned().unwrap_or(Origin::Default);
            let line = match value {
                None => format!("# {key} is not set\n"),
                Some(_) if SECRETS.contains(&key.as_str()) => {
                    format!("{key} = \"<redacted>\"  # {origin}\n")
                }
                Some(v) => format!("{key} = {}  # {origin}\n", toml_value(key, v)),
            };
            out.push_str(&line);
        }
        out
    }
}

fn toml_value(key: &str, v: &str) -> String {
    if v == "true" || v == "false" {
        return v.to_string();
    }
    if key == "backplane" {
        // Never print a Redis password: the URL's own display masks it.
        if let Ok(url) = RedisUrl::parse(v) {
            return toml::Value::String(url.to_string()).to_string();
        }
    }
    match v.parse::<i64>() {
        Ok(n) if n.to_string() == v => n.to_string(),
        _ => toml::Value::String(v.to_string()).to_string(),
    }
}

/// The settings a configuration file gives: long name → (line, value as text).
#[derive(Default)]
struct FileValues {
    path: Option<PathBuf>,
    values: BTreeMap<String, (usize, String)>,
}

impl FileValues {
    fn get(&self, long: &str) -> Option<(usize, &str)> {
        self.values.get(long).map(|(l, v)| (*l, v.as_str()))
    }

    fn read(path: &Path, cmd: &Command) -> Result<FileValues, LoadError> {
        let shown = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|e| LoadError(format!("cannot read configuration file {shown}: {e}")))?;
        FileValues::parse(path, &text, cmd)
    }

    fn parse(path: &Path, text: &str, cmd: &Command) -> Result<FileValues, LoadError> {
        use toml::Spanned;
        let shown = path.display();
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let table: BTreeMap<Spanned<String>, Spanned<toml::Value>> =
            toml::from_str(text).map_err(|e| {
                let at = e
                    .span()
                    .map_or(String::new(), |s| format!(":{}", line_of(s.start)));
                LoadError(format!("{shown}{at}: not valid TOML: {}", e.message()))
            })?;
        let known: BTreeMap<&str, &Arg> = settings(cmd).collect();
        let mut values = BTreeMap::new();
        for (key, value) in table {
            let line = line_of(key.span().start);
            let name = key.get_ref().as_str();
            let Some(arg) = known.get(name) else {
                return Err(LoadError(format!(
                    "{shown}:{line}: unknown key `{name}` (keys are the long option names, \
                     e.g. max-queue-bytes; see sseloop --help)"
                )));
            };
            let text = match value.get_ref() {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Boolean(b) if is_flag(arg) => b.to_string(),
                toml::Value::Boolean(_) => {
                    return Err(LoadError(format!(
                        "{shown}:{line}: {name}: expected a value, not true/false"
                    )))
                }
                other => {
                    return Err(LoadError(format!(
                        "{shown}:{line}: {name}: expected a string or an integer, got a {}",
                        other.type_str()
                    )))
                }
            };
            if is_flag(arg) && !matches!(value.get_ref(), toml::Value::Boolean(_)) {
                return Err(LoadError(format!(
                    "{shown}:{line}: {name}: expected true or false"
                )));
            }
            values.insert(name.to_string(), (line, text));
        }
        Ok(FileValues {
            path: Some(path.to_path_buf()),
            values,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(args: &[&str], env: &[(&str, &str)]) -> Sources {
        Sources::new(
            args.iter().map(OsString::from).collect(),
            env.iter().map(|(k, v)| (k.to_string(), OsString::from(v))),
        )
    }

    fn file(text: &str) -> (tempdir::Dir, PathBuf) {
        let dir = tempdir::Dir::new();
        let path = dir.path().join("sseloop.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    /// A scratch directory removed on drop (no dependency for one test helper).
    mod tempdir {
        pub struct Dir(std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "sseloop-cfg-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn flag_beats_environment_beats_file_beats_default() {
        let (_d, path) = file("heartbeat-ms = 111\nretry-ms = \"222\"\nhistory = 333\nui = true\n");
        let p = path.to_str().unwrap();
        let l = sources(
            &["sseloop", "--config", p, "--heartbeat-ms", "1"],
            &[("SSELOOP_HEARTBEAT_MS", "2"), ("SSELOOP_RETRY_MS", "3")],
        )
        .load()
        .unwrap()
        .unwrap();
        assert_eq!(l.config.heartbeat_ms, 1);
        assert_eq!(l.config.retry_ms, 3);
        assert_eq!(l.config.history, 333);
        assert!(l.config.ui);
        assert_eq!(l.config.grace_ms, 5000);
        assert_eq!(l.origins["heartbeat-ms"], Origin::Flag);
        assert_eq!(
            l.origins["retry-ms"],
            Origin::Env("SSELOOP_RETRY_MS".into())
        );
        assert_eq!(
            l.origins["history"],
            Origin::File {
                path: path.clone(),
                line: 3
            }
        );
        assert_eq!(l.origins["grace-ms"], Origin::Default);
        // An environment "false" overrides a file's true.
        let l = sources(&["sseloop", "--config", p], &[("SSELOOP_UI", "false")])
            .load()
            .unwrap()
            .unwrap();
        assert!(!l.config.ui);
        // SSELOOP_CONFIG names the file too.
        let l = sources(&["sseloop"], &[("SSELOOP_CONFIG", p)])
            .load()
            .unwrap()
            .unwrap();
        assert_eq!(l.config.history, 333);
    }

    #[test]
    fn errors_name_the_file_line_and_key_or_the_variable() {
        let (_d, path) = file("# comment\nretry-ms = 1\n\nmax-queue-bytes = \"2048G\"\n");
        let p = path.to_str().unwrap();
        let err = sources(&["sseloop", "--config", p], &[])
            .load()
            .unwrap()
            .unwrap_err();
        assert_eq!(
            err.0,
            format!("{p}:4: max-queue-bytes: must be between 65536 and 1099511627776 (got 2199023255552)")
        );
        let (_d2, path2) = file("retry-ms = 1\nmax-qeue-bytes = 1\n");
        let err = sources(&["sseloop", "--config", path2.to_str().unwrap()], &[])
            .load()
            .unwrap()
            .unwrap_err();
        assert!(err.0.contains(":2: unknown key `max-qeue-bytes`"), "{err}");
        let (_d3, path3) = file("history = 1.5\n");
        let err = sources(&["sseloop", "--config", path3.to_str().unwrap()], &[])
            .load()
            .unwrap()
            .unwrap_err();
        assert!(
            err.0
                .ends_with(":1: history: expected a string or an integer, got a float"),
            "{err}"
        );
        let (_d4, path4) = file("ui = \"yes\"\nhistory = [\n");
        let err = sources(&["sseloop", "--config", path4.to_str().unwrap()], &[])
            .load()
            .unwrap()
            .unwrap_err();
        assert!(err.0.contains("not valid TOML"), "{err}");
        let err = sources(&["sseloop"], &[("SSELOOP_RETRY_MS", "86400001")])
            .load()
            .unwrap()
            .unwrap_err();
        assert_eq!(
            err.0,
            "SSELOOP_RETRY_MS=\"86400001\": must be between 0 and 86400000 (got 86400001)"
        );
        assert!(
            !err.0.contains("--retry-ms"),
            "names the variable, not the flag"
        );
        let err = sources(&["sseloop"], &[("SSELOOP_OPEN_PUBLISH", "maybe")])
            .load()
            .unwrap()
            .unwrap_err();
        assert_eq!(
            err.0,
            "SSELOOP_OPEN_PUBLISH=\"maybe\": expected true or false"
        );
        let err = sources(&["sseloop", "--config", "/nonexistent/x.toml"], &[])
            .load()
            .unwrap()
            .unwrap_err();
        assert!(
            err.0
                .starts_with("cannot read configuration file /nonexistent/x.toml"),
            "{err}"
        );
        // A bad flag is still clap's error, with usage.
        assert!(sources(&["sseloop", "--retry-ms", "x"], &[])
            .load()
            .is_err());
    }

    #[test]
    fn every_setting_has_a_variable_and_a_file_key() {
        let (_secret_dir, secret) = file("a-secret\n");
        let cmd = Config::command();
        let mut n = 0;
        for (long, arg) in settings(&cmd) {
            n += 1;
            let value = if long.ends_with("-file") {
                secret.display().to_string()
            } else {
                sample(long, arg)
            };
            let var = env_var(long);
            let l = sources(&["sseloop"], &[(var.as_str(), value.as_str())])
                .load()
                .unwrap()
                .unwrap_or_else(|e| panic!("{var}={value}: {e}"));
            assert_eq!(l.origins[long], Origin::Env(var.clone()), "{var}");
            let key = if is_flag(arg) {
                format!("{long} = true\n")
            } else {
                format!("{long} = {}\n", toml::Value::String(value.clone()))
            };
            let (_d, path) = file(&key);
            let l = sources(&["sseloop", "--config", path.to_str().unwrap()], &[])
                .load()
                .unwrap()
                .unwrap_or_else(|e| panic!("{key}: {e}"));
            assert!(
                matches!(l.origins[long], Origin::File { line: 1, .. }),
                "{key}"
            );
        }
        assert!(n >= 30, "only {n} settings?");
    }

    /// A valid value for option `long`.
    fn sample(long: &str, arg: &Arg) -> String {
        if is_flag(arg) {
            return "true".into();
        }
        if let Some(d) = arg.get_default_values().first() {
            return d.to_string_lossy().into_owned();
        }
        match long {
            "max-connections" => "100".into(),
            "backplane" => "redis://127.0.0.1:6379".into(),
            "log-level" => "debug".into(),
            "metrics-listen" => "127.0.0.1:9090".into(),
            "trusted-proxy" => "10.0.0.0/8".into(),
            _ => "x".into(),
        }
    }

    #[test]
    fn print_config_redacts_secrets_and_masks_the_redis_password() {
        let l = sources(
            &["sseloop", "--publish-token", "hunter2"],
            &[("SSELOOP_BACKPLANE", "redis://u:sekrit@127.0.0.1:6379")],
        )
        .load()
        .unwrap()
        .unwrap();
        let text = l.to_toml();
        assert!(
            !text.contains("hunter2") && !text.contains("sekrit"),
            "{text}"
        );
        assert!(
            text.contains("publish-token = \"<redacted>\"  # command line"),
            "{text}"
        );
        assert!(text.contains("heartbeat-ms = 15000  # default"), "{text}");
        assert!(text.contains("# SSELOOP_BACKPLANE"), "{text}");
        assert!(text.contains("# jwt-issuer is not set"), "{text}");
        // What it prints is a configuration file that loads back to the same settings.
        let reloadable: String = text
            .lines()
            .filter(|l| !l.contains("<redacted>") && !l.starts_with("backplane"))
            .map(|l| format!("{l}\n"))
            .collect();
        let (_d, path) = file(&reloadable);
        let again = sources(&["sseloop", "--config", path.to_str().unwrap()], &[])
            .load()
            .unwrap()
            .unwrap();
        assert_eq!(format!("{:?}", again.config.heartbeat_ms), "15000");
    }
}
