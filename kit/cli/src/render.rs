//! `butter-kit render`: what a backend would run for a topology, printed or written.

use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};
use butter_testbed::topology::Topology;
use butter_testbed::topology::render::{compose, k8s};

use crate::Backend;

/// The relative path from `from` to `to` (both absolute).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let (f, t): (Vec<Component>, Vec<Component>) =
        (from.components().collect(), to.components().collect());
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c);
    }
    out
}

/// Prints (or writes to `out`) the rendering of `t` for `backend`.
pub fn render(root: &Path, backend: Backend, t: &Topology, out: Option<&Path>) -> Result<()> {
    match backend {
        Backend::Compose => {
            let text = compose::render(t)?;
            match out {
                Some(path) => {
                    std::fs::write(path, &text)
                        .with_context(|| format!("writing {}", path.display()))?;
                    println!(
                        "wrote {}; run it with: docker-compose --project-directory compose \
                         --file {} up -d (or: make up TOPOLOGY={})",
                        path.display(),
                        path.display(),
                        t.file
                    );
                }
                None => print!("{text}"),
            }
        }
        Backend::Netns => {
            let plan = crate::netns::plan(t)?;
            println!("sudo {}", plan.command());
        }
        Backend::K8s => {
            let dir = match out {
                Some(d) => {
                    std::fs::create_dir_all(d)?;
                    Some(d.canonicalize()?)
                }
                None => None,
            };
            // From a site directory of the overlay to k8s/base.
            let base = match &dir {
                Some(d) => relative(&d.join("site"), &root.join("k8s").join("base")),
                None => PathBuf::from("../../../base"),
            };
            let overlay = k8s::render(t, &base.display().to_string())?;
            for (path, text) in &overlay {
                match &dir {
                    Some(d) => {
                        let file = d.join(path);
                        if let Some(parent) = file.parent() {
                            std::fs::create_dir_all(parent)?;
                        }
                        std::fs::write(&file, text)
                            .with_context(|| format!("writing {}", file.display()))?;
                        println!("wrote {}", file.display());
                    }
                    None => print!("# ---- {path}\n{text}\n"),
                }
            }
            if let Some(d) = &dir {
                println!("apply with: kubectl apply -k {}", d.display());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_climb_then_descend() {
        assert_eq!(
            relative(
                Path::new("/r/k8s/overlays/x/site"),
                Path::new("/r/k8s/base")
            ),
            PathBuf::from("../../../base")
        );
        assert_eq!(
            relative(Path::new("/tmp/o/site"), Path::new("/r/k8s/base")),
            PathBuf::from("../../../r/k8s/base")
        );
    }
}
