//! Runs the compose CLI on the testbed's file: `docker compose` (v2) where it exists, else
//! Debian's `docker-compose` 1.29. `BUTTER_COMPOSE="docker-compose"` (or any command line) forces
//! one.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// A compose CLI bound to one file and project.
#[derive(Debug, Clone)]
pub struct Compose {
    program: Vec<String>,
    file: PathBuf,
    project: String,
    directory: Option<PathBuf>,
}

fn works(program: &[&str]) -> bool {
    let Some((first, rest)) = program.split_first() else {
        return false;
    };
    Command::new(first)
        .args(rest)
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Compose {
    /// Finds a compose CLI for `file` and `project`.
    pub fn detect(file: &Path, project: &str) -> Result<Self> {
        let program: Vec<String> = match std::env::var("BUTTER_COMPOSE") {
            Ok(p) if !p.trim().is_empty() => p.split_whitespace().map(String::from).collect(),
            _ => {
                if works(&["docker", "compose"]) {
                    vec!["docker".into(), "compose".into()]
                } else if works(&["docker-compose"]) {
                    vec!["docker-compose".into()]
                } else {
                    bail!(
                        "no compose CLI: install `docker-compose` (Debian) or the `docker compose` plugin"
                    );
                }
            }
        };
        Ok(Compose {
            program,
            file: file.to_path_buf(),
            project: project.to_string(),
            directory: None,
        })
    }

    /// Resolves the file's relative paths (and reads `.env`) in `dir` instead of the file's own
    /// directory (`--project-directory`): a rendered file refers to `compose/`'s files.
    pub fn in_directory(mut self, dir: &Path) -> Self {
        self.directory = Some(dir.to_path_buf());
        self
    }

    /// The compose file in use.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The command line in use, for messages.
    pub fn program(&self) -> String {
        self.program.join(" ")
    }

    fn command(&self, profiles: &[&str]) -> Command {
        let mut cmd = Command::new(&self.program[0]);
        cmd.args(&self.program[1..])
            .arg("--project-name")
            .arg(&self.project)
            .arg("--file")
            .arg(&self.file);
        if let Some(dir) = &self.directory {
            cmd.arg("--project-directory").arg(dir);
        }
        for p in profiles {
            cmd.arg("--profile").arg(p);
        }
        cmd
    }

    fn run_with(&self, profiles: &[&str], args: &[String], env: &[(&str, String)]) -> Result<()> {
        let mut cmd = self.command(profiles);
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let status = cmd
            .status()
            .with_context(|| format!("running {}", self.program()))?;
        if !status.success() {
            bail!("`{} {}` failed: {status}", self.program(), args.join(" "));
        }
        Ok(())
    }

    /// `up -d`: creates what is missing, starts what is stopped, leaves running containers be.
    /// `scale` overrides the nodes per LAN; `profiles` adds e.g. `monitoring`; `env` is passed
    /// to the compose CLI (variables the compose file reads).
    pub fn up(
        &self,
        scale: Option<usize>,
        profiles: &[&str],
        env: &[(&str, String)],
    ) -> Result<()> {
        let mut args = vec!["up".to_string(), "-d".into(), "--remove-orphans".into()];
        if let Some(n) = scale {
            for lan in crate::network::LANS {
                args.push("--scale".into());
                args.push(format!("{lan}={n}"));
            }
        }
        self.run_with(profiles, &args, env)
    }

    /// `down -v`: removes the containers, networks and volumes the project made (monitoring
    /// profile included). Its output (two lines per container: 250 at `SCALE=40`) is kept and
    /// only its last lines shown, in the error, if it fails.
    pub fn down(&self) -> Result<()> {
        let args = ["down", "--volumes", "--remove-orphans", "--timeout", "5"];
        let out = self
            .command(&["monitoring"])
            .args(args)
            .output()
            .with_context(|| format!("running {}", self.program()))?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = text.lines().collect();
            bail!(
                "`{} {}` failed ({}): {}",
                self.program(),
                args.join(" "),
                out.status,
                lines[lines.len().saturating_sub(3)..].join("; ")
            );
        }
        Ok(())
    }

    /// `config --quiet`: the file is valid for this CLI (with every profile).
    pub fn check(&self) -> Result<()> {
        let out = self
            .command(&["monitoring"])
            .args(["config", "--quiet"])
            .output()
            .with_context(|| format!("running {}", self.program()))?;
        if !out.status.success() {
            bail!(
                "`{} config` rejects {}: {}",
                self.program(),
                self.file.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}
