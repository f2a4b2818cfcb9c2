//! Config files as Vitess (viper) finds and reads them.
//!
//! - `--config-file` (with extension) is used alone; otherwise
//!   `--config-name` (default `vtconfig`) is searched in each
//!   `--config-path` directory (default: the working directory) with each
//!   of viper's extensions in viper's order, then without extension when
//!   `--config-type` is given.
//! - The type is `--config-type` when searching, else the extension:
//!   `yaml`/`yml`, `json`, `toml` are read; viper's other types are refused
//!   with a clear error.
//! - Not found: `--config-file-not-found-handling` (`ignore`, `warn` — the
//!   default —, `error`, `exit`; the last two stop vtorc).
//! - Keys are the flag names; `_` and `-` are the same. Keys of Go VTOrc
//!   flags without effect in vtorc-rs are accepted and reported; other
//!   unknown keys are refused (a typo must not be silently ignored).

use std::path::{Path, PathBuf};

use super::goflags::{self, FlagStatus};
use super::{ConfigError, Options};

/// viper's `SupportedExts`, in its search order.
const VIPER_EXTS: &[&str] = &[
    "json",
    "toml",
    "yaml",
    "yml",
    "properties",
    "props",
    "prop",
    "hcl",
    "tfvars",
    "dotenv",
    "env",
    "ini",
];

/// A config file format vtorc-rs reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    /// YAML (`yaml`, `yml`).
    Yaml,
    /// JSON.
    Json,
    /// TOML.
    Toml,
}

impl FileType {
    /// The type called `name` (a `--config-type` value or an extension).
    pub fn parse(name: &str, path: &Path) -> Result<FileType, ConfigError> {
        match name.to_ascii_lowercase().as_str() {
            "yaml" | "yml" => Ok(FileType::Yaml),
            "json" => Ok(FileType::Json),
            "toml" => Ok(FileType::Toml),
            other => Err(ConfigError::File {
                path: path.to_path_buf(),
                reason: format!(
                    "unsupported config type {other:?} (vtorc-rs reads yaml, yml, json and toml; \
                     set --config-type or use one of those extensions)"
                ),
            }),
        }
    }
}

/// `--config-file-not-found-handling`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotFound {
    /// Carry on silently.
    Ignore,
    /// Carry on with a warning (the default).
    Warn,
    /// Stop with an error.
    Error,
    /// Stop (Go exits at once; the same for vtorc-rs).
    Exit,
}

impl NotFound {
    fn parse(value: Option<&str>) -> Result<NotFound, ConfigError> {
        match value.unwrap_or(super::defaults::CONFIG_FILE_NOT_FOUND_HANDLING) {
            "ignore" => Ok(NotFound::Ignore),
            "warn" => Ok(NotFound::Warn),
            "error" => Ok(NotFound::Error),
            "exit" => Ok(NotFound::Exit),
            other => Err(ConfigError::InvalidValue {
                option: "config-file-not-found-handling",
                value: other.into(),
                reason: "expected ignore, warn, error or exit".into(),
            }),
        }
    }
}

/// The config file to read, as the command line designates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSpec {
    /// Its path.
    pub path: PathBuf,
    /// Its format.
    pub file_type: FileType,
}

/// Finds the config file. `Ok(None)` = none (and the handling allows it);
/// `notes` receives the warning of `warn`.
pub fn locate(cli: &Options, notes: &mut Vec<String>) -> Result<Option<FileSpec>, ConfigError> {
    let handling = NotFound::parse(cli.config_file_not_found_handling.as_deref())?;
    let explicit = cli
        .config
        .clone()
        .or_else(|| std::env::var_os("VT_CONFIG_FILE").map(PathBuf::from))
        .filter(|p| !p.as_os_str().is_empty());
    let found = if let Some(path) = explicit {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default()
            .to_string();
        let file_type = FileType::parse(&ext, &path)?;
        if path.is_file() {
            Ok(FileSpec { path, file_type })
        } else {
            Err(format!("config file {} not found", path.display()))
        }
    } else {
        let name = cli
            .config_name
            .clone()
            .unwrap_or_else(|| super::defaults::CONFIG_NAME.into());
        if name.is_empty() {
            return Ok(None);
        }
        let dirs: Vec<PathBuf> = match &cli.config_path {
            Some(list) if !list.0.is_empty() => list.0.iter().map(PathBuf::from).collect(),
            _ => std::env::current_dir().into_iter().collect(),
        };
        let config_type = cli.config_type.clone().filter(|t| !t.is_empty());
        let mut hit = None;
        'dirs: for dir in &dirs {
            for ext in VIPER_EXTS {
                let candidate = dir.join(format!("{name}.{ext}"));
                if candidate.is_file() {
                    hit = Some((
                        candidate,
                        config_type.clone().unwrap_or_else(|| (*ext).to_string()),
                    ));
                    break 'dirs;
                }
            }
            if let Some(t) = &config_type {
                let candidate = dir.join(&name);
                if candidate.is_file() {
                    hit = Some((candidate, t.clone()));
                    break 'dirs;
                }
            }
        }
        match hit {
            Some((path, t)) => Ok(FileSpec {
                file_type: FileType::parse(&t, &path)?,
                path,
            }),
            None => Err(format!(
                "no config file {name:?} found in {:?}",
                dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>()
            )),
        }
    };
    match found {
        Ok(spec) => Ok(Some(spec)),
        Err(reason) => match handling {
            NotFound::Ignore => Ok(None),
            // Go's `warn` says nothing in practice (it falls through to
            // `ignore`); vtorc-rs warns when a file was asked for by name.
            NotFound::Warn => {
                if cli.config.is_some() || cli.config_name.is_some() || cli.config_path.is_some() {
                    notes.push(format!("{reason}; using flags, environment and defaults"));
                }
                Ok(None)
            }
            NotFound::Error | NotFound::Exit => Err(ConfigError::NotFound { reason }),
        },
    }
}

/// Reads and parses a config file into options (keys of Go VTOrc flags
/// without effect are dropped and reported in `notes`).
pub fn read(spec: &FileSpec, notes: &mut Vec<String>) -> Result<Options, ConfigError> {
    let text = std::fs::read_to_string(&spec.path).map_err(|e| ConfigError::File {
        path: spec.path.clone(),
        reason: e.to_string(),
    })?;
    parse(&text, spec, notes)
}

/// Parses config file contents (see [`read`]).
pub fn parse(text: &str, spec: &FileSpec, notes: &mut Vec<String>) -> Result<Options, ConfigError> {
    let file_err = |reason: String| ConfigError::File {
        path: spec.path.clone(),
        reason,
    };
    let value: serde_json::Value = if text.trim().is_empty() {
        serde_json::Value::Object(Default::default())
    } else {
        match spec.file_type {
            FileType::Yaml => serde_norway::from_str(text).map_err(|e| file_err(e.to_string()))?,
            FileType::Json => serde_json::from_str(text).map_err(|e| file_err(e.to_string()))?,
            FileType::Toml => toml::from_str(text).map_err(|e| file_err(e.message().to_string()))?,
        }
    };
    let serde_json::Value::Object(map) = value else {
        return Err(file_err("expected a map of keys named like the flags".into()));
    };
    let mut kept = serde_json::Map::new();
    for (key, v) in map {
        let dashed = goflags::dashed(&key);
        match goflags::lookup(&dashed) {
            Some(flag) if flag.status == FlagStatus::NoEffect => {
                notes.push(format!(
                    "config key {key:?} accepted for Go VTOrc compatibility, no effect: {}",
                    flag.note
                ));
            }
            _ => {
                kept.insert(dashed, v);
            }
        }
    }
    serde_json::from_value(serde_json::Value::Object(kept.clone())).map_err(|e| {
        // Name the key: the first one that fails on its own.
        for (key, v) in kept {
            let one = serde_json::Map::from_iter([(key.clone(), v)]);
            if let Err(e) = serde_json::from_value::<Options>(serde_json::Value::Object(one)) {
                return file_err(format!("key {key:?}: {e}"));
            }
        }
        file_err(e.to_string())
    })
}
