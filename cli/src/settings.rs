//! `tidelog serve`'s settings from a TOML file (`--config FILE`, or `TIDELOG_CONFIG`) and from
//! `TIDELOG_*` environment variables.
//!
//! Both are turned into the serve flags they name (`data_dir = "d"` and `TIDELOG_DATA_DIR=d`
//! are `--data-dir=d`) and placed before the command line's own arguments; the serve command
//! takes the last occurrence of a flag, so flags win over the environment, the environment
//! over the file, and the file over the defaults. The names are the flags' own: whatever
//! `tidelog serve --help` lists is a setting, nothing else is.
//!
//! An unknown name in the file is an error (a typo must not silently leave a default). An
//! unknown `TIDELOG_*` variable is ignored: the test harnesses and scripts use the prefix for
//! their own knobs, and they are inherited by the brokers they start.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use anyhow::{anyhow, Context, Result};

/// The prefix of the environment variables that set serve flags.
pub const ENV_PREFIX: &str = "TIDELOG_";
/// The variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "TIDELOG_CONFIG";
/// A config file larger than this is refused (it is read whole).
pub const CONFIG_BYTES_MAX: u64 = 1 << 20;

/// Where an effective setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Default,
    File,
    Env,
    Flag,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Default => "default",
            Source::File => "config file",
            Source::Env => "environment",
            Source::Flag => "flag",
        }
    }
}

/// The serve command's settings: long flag name to whether it takes a value (false: a switch).
fn settings(serve: &clap::Command) -> BTreeMap<String, bool> {
    serve
        .get_arguments()
        .filter_map(|arg| {
            let long = arg.get_long()?;
            (!matches!(long, "config" | "print-config" | "help" | "version"))
                .then(|| (long.to_owned(), arg.get_action().takes_values()))
        })
        .collect()
}

/// `argv` with the config file's and the environment's settings inserted before the serve
/// command's own arguments, and where each setting came from. Other commands pass through.
///
/// # Errors
/// An unreadable or malformed config file, an unknown name or an unusable value in it, or a
/// switch set to something other than true or false.
pub fn expand(
    argv: Vec<OsString>,
    env: impl IntoIterator<Item = (String, String)>,
    serve: &clap::Command,
) -> Result<(Vec<OsString>, BTreeMap<String, Source>)> {
    let mut sources = BTreeMap::new();
    if argv.get(1).and_then(|a| a.to_str()) != Some("serve") {
        return Ok((argv, sources));
    }
    let known = settings(serve);
    let env: Vec<(String, String)> = env.into_iter().collect();
    let own = &argv[2..];
    let path = flag_value(own, "config").or_else(|| {
        env.iter()
            .find(|(k, _)| k == CONFIG_ENV)
            .map(|(_, v)| OsString::from(v))
    });
    let mut inserted: Vec<OsString> = Vec::new();
    if let Some(path) = path {
        for (name, value) in from_file(Path::new(&path), &known)? {
            push(&mut inserted, &name, value, known[&name]);
            sources.insert(name, Source::File);
        }
    }
    for (key, value) in &env {
        let Some(rest) = key.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let name = rest.to_ascii_lowercase().replace('_', "-");
        let Some(&takes_value) = known.get(&name) else {
            continue;
        };
        let value = if takes_value {
            Some(value.clone())
        } else {
            switch(value).with_context(|| format!("{key}={value}"))?
        };
        push(&mut inserted, &name, value, takes_value);
        sources.insert(name, Source::Env);
    }
    for name in known.keys() {
        if flag_given(own, name) {
            sources.insert(name.clone(), Source::Flag);
        }
    }
    let mut out = Vec::with_capacity(argv.len() + inserted.len());
    out.extend_from_slice(&argv[..2]);
    out.extend(inserted);
    out.extend_from_slice(own);
    Ok((out, sources))
}

/// A switch's value from the environment: `Some("")` on, `None` off.
fn switch(value: &str) -> Result<Option<String>> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(Some(String::new())),
        "0" | "false" | "no" | "off" | "" => Ok(None),
        _ => Err(anyhow!("a switch takes true or false")),
    }
}

/// Appends one setting as a flag: `--name=value`, a bare `--name` for a switch that is on,
/// nothing for one that is off.
fn push(args: &mut Vec<OsString>, name: &str, value: Option<String>, takes_value: bool) {
    match value {
        Some(v) if takes_value => args.push(format!("--{name}={v}").into()),
        Some(_) => args.push(format!("--{name}").into()),
        None => {}
    }
}

/// The settings of a TOML config file, by flag name. Keys are the flags' names with `_` or
/// `-`; arrays are joined with commas (`peers = ["1@a:1", "2@b:1"]`).
fn from_file(path: &Path, known: &BTreeMap<String, bool>) -> Result<Vec<(String, Option<String>)>> {
    let shown = path.display();
    let len = std::fs::metadata(path)
        .with_context(|| format!("config file {shown}"))?
        .len();
    if len > CONFIG_BYTES_MAX {
        return Err(anyhow!(
            "config file {shown} is {len} bytes, more than {CONFIG_BYTES_MAX}"
        ));
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("config file {shown}"))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| anyhow!("config file {shown}: {}", e.message()))?;
    let mut out = Vec::new();
    for (key, value) in table {
        let name = key.replace('_', "-");
        let Some(&takes_value) = known.get(&name) else {
            return Err(anyhow!(
                "config file {shown}: unknown setting `{key}` (the names are those of \
                 `tidelog serve --help`, with - or _)"
            ));
        };
        let bad = |what: &str| anyhow!("config file {shown}: `{key}` {what}");
        let value = match (value, takes_value) {
            (toml::Value::Boolean(on), false) => on.then(String::new),
            (_, false) => return Err(bad("is a switch: true or false")),
            (toml::Value::String(s), true) => Some(s),
            (toml::Value::Integer(i), true) => Some(i.to_string()),
            (toml::Value::Float(f), true) => Some(f.to_string()),
            (toml::Value::Boolean(b), true) => Some(b.to_string()),
            (toml::Value::Array(items), true) => {
                let parts: Result<Vec<String>> = items
                    .into_iter()
                    .map(|item| match item {
                        toml::Value::String(s) => Ok(s),
                        toml::Value::Integer(i) => Ok(i.to_string()),
                        _ => Err(bad("takes a list of strings or numbers")),
                    })
                    .collect();
                Some(parts?.join(","))
            }
            (_, true) => return Err(bad("takes a string, a number or a list")),
        };
        out.push((name, value));
    }
    Ok(out)
}

/// The value of `--name VALUE` or `--name=VALUE` among `args` (the last one).
fn flag_value(args: &[OsString], name: &str) -> Option<OsString> {
    let long = format!("--{name}");
    let with_eq = format!("--{name}=");
    let mut found = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let Some(s) = arg.to_str() else {
            continue;
        };
        if s == "--" {
            break;
        }
        if s == long {
            found = it.next().cloned();
        } else if let Some(v) = s.strip_prefix(&with_eq) {
            found = Some(OsString::from(v));
        }
    }
    found
}

/// Whether `--name` (with or without `=VALUE`) is among `args`.
fn flag_given(args: &[OsString], name: &str) -> bool {
    let long = format!("--{name}");
    let with_eq = format!("--{name}=");
    args.iter()
        .filter_map(|a| a.to_str())
        .take_while(|s| *s != "--")
        .any(|s| s == long || s.starts_with(&with_eq))
}

/// The effective serve settings as TOML, each with where it came from: what
/// `tidelog serve --print-config` prints.
pub fn print(
    matches: &clap::ArgMatches,
    serve: &clap::Command,
    sources: &BTreeMap<String, Source>,
) -> String {
    let mut out = String::new();
    for arg in serve.get_arguments() {
        let Some(long) = arg.get_long() else {
            continue;
        };
        if matches!(long, "config" | "print-config" | "help" | "version") {
            continue;
        }
        let id = arg.get_id().as_str();
        let key = long.replace('-', "_");
        let takes_value = arg.get_action().takes_values();
        let value = if takes_value {
            match matches.get_raw(id) {
                Some(values) => {
                    let parts: Vec<String> =
                        values.map(|v| v.to_string_lossy().into_owned()).collect();
                    toml::Value::String(parts.join(",")).to_string()
                }
                None => {
                    out.push_str(&format!("# {key} (not set)\n"));
                    continue;
                }
            }
        } else if matches!(
            arg.get_action(),
            clap::ArgAction::SetTrue | clap::ArgAction::SetFalse
        ) {
            matches.get_flag(id).to_string()
        } else {
            continue;
        };
        let source = sources.get(long).copied().unwrap_or(Source::Default);
        out.push_str(&format!("{key} = {value}  # {}\n", source.name()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> clap::Command {
        clap::Command::new("serve")
            .arg(
                clap::Arg::new("data_dir")
                    .long("data-dir")
                    .default_value("d"),
            )
            .arg(clap::Arg::new("peers").long("peers"))
            .arg(clap::Arg::new("shards").long("shards"))
            .arg(
                clap::Arg::new("broker_only")
                    .long("broker-only")
                    .action(clap::ArgAction::SetTrue),
            )
            .arg(clap::Arg::new("config").long("config"))
    }

    fn strings(args: &[OsString]) -> Vec<String> {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn file_then_environment_then_flags_and_other_commands_untouched() {
        let dir = std::env::temp_dir().join(format!("tidelog-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("t.toml");
        std::fs::write(
            &file,
            "data_dir = \"/from/file\"\npeers = [\"1@a:1\", \"2@b:1\"]\nshards = 2\nbroker_only = true\n",
        )
        .expect("write");
        let argv: Vec<OsString> = [
            "tidelog",
            "serve",
            "--config",
            file.to_str().expect("utf-8"),
            "--shards",
            "4",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let env = [
            ("TIDELOG_SHARDS".to_owned(), "3".to_owned()),
            ("TIDELOG_FAULT_SEED".to_owned(), "9".to_owned()),
        ];
        let (args, sources) = expand(argv, env, &command()).expect("expand");
        assert_eq!(
            strings(&args),
            [
                "tidelog",
                "serve",
                "--broker-only",
                "--data-dir=/from/file",
                "--peers=1@a:1,2@b:1",
                "--shards=2",
                "--shards=3",
                "--config",
                file.to_str().expect("utf-8"),
                "--shards",
                "4"
            ]
        );
        assert_eq!(sources["data-dir"], Source::File);
        assert_eq!(sources["shards"], Source::Flag);
        let other: Vec<OsString> = ["tidelog", "topic", "list"]
            .iter()
            .map(OsString::from)
            .collect();
        let (same, _) = expand(other.clone(), [], &command()).expect("expand");
        assert_eq!(same, other);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unknown_names_and_bad_values_in_the_file_are_refused() {
        let dir = std::env::temp_dir().join(format!("tidelog-settings-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        for (text, expect) in [
            ("data_dirr = \"x\"", "unknown setting `data_dirr`"),
            ("broker_only = \"yes\"", "is a switch"),
            ("peers = { a = 1 }", "takes a string"),
            ("peers = [[1]]", "list of strings"),
            ("data_dir = ", "config file"),
        ] {
            let file = dir.join("bad.toml");
            std::fs::write(&file, text).expect("write");
            let argv: Vec<OsString> = ["tidelog", "serve", &format!("--config={}", file.display())]
                .iter()
                .map(OsString::from)
                .collect();
            let err = expand(argv, [], &command()).expect_err(text).to_string();
            assert!(err.contains(expect), "{text}: {err}");
        }
        let argv: Vec<OsString> = ["tidelog", "serve"].iter().map(OsString::from).collect();
        let err = expand(
            argv,
            [("TIDELOG_BROKER_ONLY".into(), "maybe".into())],
            &command(),
        )
        .expect_err("a switch");
        assert!(format!("{err:#}").contains("true or false"), "{err:#}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
