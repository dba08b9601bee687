//! The documents that list the options, checked against the options
//! themselves: the README's table, `packaging/banyan.toml` and
//! `samples/banyan.toml` name every option and none that does not exist,
//! with the defaults the code has; the sample cluster's configs parse.

use std::path::Path;

use clap::{ArgAction, Args, Command};

use super::{Options, ServeArgs};

/// One option as the code declares it.
struct Opt {
    /// The flag without `--`.
    long: String,
    /// `(table, key)` in the config file; `None` for `--config`.
    key: Option<(String, String)>,
    /// A switch (`--no-rtmp`): off unless given.
    switch: bool,
    /// The default value, as the flag would take it.
    default: Option<String>,
}

fn opts() -> Vec<Opt> {
    let mut cmd = ServeArgs::augment_args(Command::new("serve"));
    cmd.build();
    cmd.get_arguments()
        .filter_map(|a| Some((a, a.get_long()?)))
        .filter(|(_, l)| *l != "help")
        .map(|(a, long)| {
            let snake = long.replace('-', "_");
            let key = match snake.strip_prefix("cluster_") {
                _ if long == "config" => None,
                Some(rest) => Some(("cluster".to_string(), rest.to_string())),
                None => Some((String::new(), snake.clone())),
            };
            let switch = matches!(a.get_action(), ArgAction::SetTrue);
            let default = match a.get_default_values() {
                [d] if !switch => Some(d.to_string_lossy().into_owned()),
                _ => None,
            };
            Opt {
                long: long.to_string(),
                key,
                switch,
                default,
            }
        })
        .collect()
}

fn read(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The rows of the README's options table: (flag, default cell).
fn readme_rows(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| l.starts_with("| `--"))
        .map(|l| {
            let cells: Vec<String> = l
                .replace("\\|", "\u{0}")
                .split('|')
                .map(|c| c.trim().replace('\u{0}', "|"))
                .collect();
            let flag = cells[1]
                .trim_matches('`')
                .trim_start_matches("--")
                .split(' ')
                .next()
                .unwrap()
                .to_string();
            (flag, cells[2].clone())
        })
        .collect()
}

#[test]
fn the_readme_table_lists_every_option_with_its_default() {
    let rows = readme_rows(&read("README.md"));
    let opts = opts();
    assert!(opts.len() > 50, "{} options", opts.len());
    for o in &opts {
        let cells: Vec<&String> = rows
            .iter()
            .filter(|(f, _)| *f == o.long)
            .map(|(_, d)| d)
            .collect();
        let [cell] = cells[..] else {
            panic!("README.md has {} rows for --{}", cells.len(), o.long);
        };
        match &o.default {
            Some(d) => assert!(
                cell.starts_with(&format!("`{d}`")),
                "README.md: --{} defaults to `{d}`, the table says {cell:?}",
                o.long
            ),
            None if o.switch => assert_eq!(cell, "off", "README.md: --{} is a switch", o.long),
            None => assert!(
                !cell.starts_with('`'),
                "README.md: --{} has no default value, the table says {cell:?}",
                o.long
            ),
        }
    }
    for (flag, _) in &rows {
        assert!(
            opts.iter().any(|o| o.long == *flag),
            "README.md documents --{flag}, not an option"
        );
    }
}

/// A config file's key lines `key = value` or `# key = value` (not the
/// indented examples inside comments), with their table and whether they
/// are commented out.
fn key_lines(text: &str) -> Vec<(String, String, toml::Value, bool)> {
    let mut table = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let (bare, commented) = match line.strip_prefix("# ") {
            Some(rest) => (rest, true),
            None => (line, false),
        };
        if bare.starts_with('[') {
            table = bare
                .split(']')
                .next()
                .unwrap()
                .trim_start_matches('[')
                .to_string();
            continue;
        }
        let Some((k, _)) = bare.split_once(" = ") else {
            continue;
        };
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            continue;
        }
        let Ok(mut t) = toml::from_str::<toml::Table>(bare) else {
            continue; // prose that happens to hold " = "
        };
        if let Some(v) = t.remove(k) {
            out.push((table.clone(), k.to_string(), v, commented));
        }
    }
    out
}

/// A TOML value as the flag would be written.
fn as_flag(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn find<'a>(opts: &'a [Opt], table: &str, key: &str) -> Option<&'a Opt> {
    opts.iter()
        .find(|o| o.key.as_ref().is_some_and(|(t, k)| t == table && k == key))
}

#[test]
fn the_packaged_config_names_every_option_at_its_default() {
    let text = read("packaging/banyan.toml");
    let lines = key_lines(&text);
    let opts = opts();
    for o in &opts {
        let Some((t, k)) = &o.key else { continue };
        assert!(
            lines.iter().any(|(lt, lk, _, _)| lt == t && lk == k),
            "packaging/banyan.toml does not name [{t}] {k}"
        );
    }
    for (table, key, value, _) in &lines {
        let o = find(&opts, table, key).unwrap_or_else(|| {
            panic!("packaging/banyan.toml names [{table}] {key}, not an option")
        });
        // The service passes its own data dir; the file says which.
        if key == "data_dir" {
            continue;
        }
        let want = match (&o.default, o.switch) {
            (Some(d), _) => d.clone(),
            (None, true) => "false".to_string(),
            (None, false) => continue, // an example value
        };
        assert_eq!(
            as_flag(value),
            want,
            "packaging/banyan.toml: {key} is not at its default"
        );
    }
    Options::from_toml(&text).expect("packaging/banyan.toml parses");
}

#[test]
fn the_sample_config_sets_real_options_to_their_defaults() {
    let text = read("samples/banyan.toml");
    let lines = key_lines(&text);
    let opts = opts();
    assert!(lines.len() > 20, "{} key lines", lines.len());
    for (table, key, value, commented) in &lines {
        let o = find(&opts, table, key)
            .unwrap_or_else(|| panic!("samples/banyan.toml names [{table}] {key}, not an option"));
        if *commented {
            continue; // an example
        }
        assert_eq!(
            Some(as_flag(value)),
            o.default,
            "samples/banyan.toml says its values are the defaults: {key}"
        );
    }
    Options::from_toml(&text).expect("samples/banyan.toml parses");
    for node in ["a", "b", "c"] {
        let path = format!("samples/cluster/{node}.toml");
        let o = Options::from_toml(&read(&path)).unwrap_or_else(|e| panic!("{path}: {e:#}"));
        assert_eq!(o.cluster.node.as_deref(), Some(node), "{path}");
    }
}
