//! The one wait until every node of a network answers `/ready`, at 100+ nodes: `butter-kit
//! up`, the chaos runner and the experiment runner all wait through [`wait`].
//!
//! Each round asks every node once (`GET /ready`, [`PER_NODE`] at most), [`WIDTH`] nodes at a
//! time, so a round over 123 containers takes about one slow node's timeout, not the sum of
//! them. While it waits it prints `ready N/M` (rewritten in place on a terminal, a line every
//! [`LINE_EVERY`] otherwise: a log should not hold a line per round). On a timeout the error
//! carries the table of every node not ready: its name, its container state, and what `/ready`
//! said (the HTTP status and the node's reason, its 503 body) or why it did not answer.

use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::engine::{Container, State};
use crate::fanout::concurrently;
use crate::http;

/// Nodes asked at once. The wait is on the nodes, not on the kit (a thread blocked on a
/// socket costs nothing): on a 2-core machine that 123 idle nodes saturate, a starved node
/// takes up to a second to answer, so 123 containers are asked in two waves, not four.
pub const WIDTH: usize = 64;

/// How long one node gets to answer `/ready`: a bridge hop or a veth, so anything slower is a
/// stuck or starved node (on a saturated 2-core machine a busy node can take over a second).
pub const PER_NODE: Duration = Duration::from_secs(2);

/// Pause between rounds.
const ROUND_EVERY: Duration = Duration::from_millis(500);

/// Off a terminal, a progress line at most this often.
pub const LINE_EVERY: Duration = Duration::from_secs(5);

/// How long to wait for a network of `containers` to be ready when the user did not say:
/// 90 s, or 1 s per container where that is more (a network of 123 containers starts them one
/// after another and its LANs discover each other in a time that grows with their size).
pub fn default_wait(containers: usize) -> Duration {
    Duration::from_secs(90.max(containers as u64))
}

/// What one node answered to `GET /ready`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 200.
    Ready,
    /// The container is not running (stopped, paused, restarting): nothing was asked.
    NotRunning,
    /// The container has no address on its LAN yet: nothing was asked.
    NoAddress,
    /// Another status (503 while it has no live peer yet, …) and the node's reason.
    NotReady {
        /// The HTTP status.
        code: u16,
        /// The body: the node's reason.
        reason: String,
    },
    /// No answer within [`PER_NODE`]: connect refused, timeout, not HTTP.
    NoAnswer(String),
}

impl Answer {
    /// 200.
    pub fn is_ready(&self) -> bool {
        *self == Answer::Ready
    }
}

/// Asks one node `GET /ready` (one request, [`PER_NODE`] at most).
pub fn probe(c: &Container) -> Answer {
    if !c.is_up() {
        return Answer::NotRunning;
    }
    let Some(addr) = c.http() else {
        return Answer::NoAddress;
    };
    match http::get(addr, "/ready", PER_NODE) {
        Ok(r) if r.status == 200 => Answer::Ready,
        Ok(r) => Answer::NotReady {
            code: r.status,
            reason: r.text().trim().to_string(),
        },
        Err(e) => Answer::NoAnswer(e.to_string()),
    }
}

/// Asks every node once, [`WIDTH`] at a time; answers in the order of `nodes`.
pub fn probe_all(nodes: &[Container]) -> Vec<Answer> {
    concurrently(nodes, WIDTH, probe)
}

/// A node that is not ready, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Laggard {
    /// Its short name (`lan-a-7`, `gw-b`).
    pub name: String,
    /// Its container state.
    pub state: State,
    /// What it answered.
    pub answer: Answer,
}

/// The table of nodes not ready: node, container state, `/ready` status, the reason.
pub fn laggards_table(laggards: &[Laggard]) -> String {
    let width = laggards
        .iter()
        .map(|l| l.name.len())
        .chain(["node".len()])
        .max()
        .unwrap_or(4);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  {:<width$} {:<8} {:<6} reason",
        "node", "state", "/ready"
    );
    for l in laggards {
        let (code, reason) = match &l.answer {
            Answer::Ready => ("200".to_string(), String::new()),
            Answer::NotRunning => ("-".to_string(), "container not running".to_string()),
            Answer::NoAddress => ("-".to_string(), "no address on its LAN yet".to_string()),
            Answer::NotReady { code, reason } => (code.to_string(), reason.clone()),
            Answer::NoAnswer(why) => ("-".to_string(), format!("no answer: {why}")),
        };
        let _ = writeln!(
            out,
            "  {:<width$} {:<8} {code:<6} {reason}",
            l.name,
            l.state.as_str()
        );
    }
    out
}

/// When to print `ready N/M`: every round on a terminal (rewritten in place), else a line when
/// the wait begins, every [`LINE_EVERY`] and when every node is ready.
#[derive(Debug)]
pub struct Progress {
    tty: bool,
    last_line: Option<Instant>,
}

impl Progress {
    /// Progress on standard error, in place if it is a terminal.
    pub fn stderr() -> Self {
        Progress::new(std::io::stderr().is_terminal())
    }

    /// Progress for a terminal (`tty`) or a log.
    pub fn new(tty: bool) -> Self {
        Progress {
            tty,
            last_line: None,
        }
    }

    /// The text to print now for `ready` of `total` after `waited` (`None`: nothing this
    /// round). On a terminal it starts with `\r` and ends without a newline until every node
    /// is ready.
    pub fn update(
        &mut self,
        now: Instant,
        ready: usize,
        total: usize,
        waited: Duration,
    ) -> Option<String> {
        let done = ready == total && total > 0;
        let due = self
            .last_line
            .is_none_or(|t| now.duration_since(t) >= LINE_EVERY);
        if self.tty {
            let end = if done { "\n" } else { " " };
            return Some(format!(
                "\rready {ready}/{total} ({:.0} s){end}",
                waited.as_secs_f64()
            ));
        }
        if !done && !due {
            return None;
        }
        self.last_line = Some(now);
        Some(format!(
            "ready {ready}/{total} ({:.0} s)\n",
            waited.as_secs_f64()
        ))
    }

    /// Ends an in-place line before an error is printed under it.
    pub fn finish(&self) -> &'static str {
        if self.tty { "\n" } else { "" }
    }
}

/// Waits until every node `nodes` lists answers `/ready` 200, asking each once per round;
/// prints `ready N/M` on standard error while it waits. `nodes` is called every round (it may
/// fail, e.g. on a container that stopped for good); `interrupted` too (it may fail to stop the
/// wait). On a timeout the error names `hint` (what the user can do) and holds the table of
/// every node not ready. Returns the nodes of the last round.
pub fn wait(
    mut nodes: impl FnMut() -> Result<Vec<Container>>,
    timeout: Duration,
    mut interrupted: impl FnMut() -> Result<()>,
    hint: &str,
) -> Result<Vec<Container>> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut progress = Progress::stderr();
    loop {
        interrupted()?;
        let cs = nodes()?;
        let answers = probe_all(&cs);
        let ready = answers.iter().filter(|a| a.is_ready()).count();
        let now = Instant::now();
        if let Some(line) = progress.update(now, ready, cs.len(), now - start) {
            eprint!("{line}");
        }
        if !cs.is_empty() && ready == cs.len() {
            return Ok(cs);
        }
        if now >= deadline {
            eprint!("{}", progress.finish());
            if cs.is_empty() {
                bail!("no Butter nodes after {timeout:?}: bring the network up first");
            }
            let laggards: Vec<Laggard> = cs
                .iter()
                .zip(answers)
                .filter(|(_, a)| !a.is_ready())
                .map(|(c, answer)| Laggard {
                    name: c.label(),
                    state: c.state,
                    answer,
                })
                .collect();
            bail!(
                "{} of {} nodes not ready after {timeout:?} ({hint}):\n{}",
                laggards.len(),
                cs.len(),
                laggards_table(&laggards)
            );
        }
        std::thread::sleep(ROUND_EVERY.min(deadline - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_wait_is_90_s_or_1_s_per_container() {
        assert_eq!(default_wait(15), Duration::from_secs(90));
        assert_eq!(default_wait(90), Duration::from_secs(90));
        assert_eq!(default_wait(123), Duration::from_secs(123));
        assert_eq!(default_wait(303), Duration::from_secs(303));
    }

    #[test]
    fn the_laggards_table_gives_each_node_its_state_status_and_reason() {
        let row = |name: &str, state, answer| Laggard {
            name: name.into(),
            state,
            answer,
        };
        let table = laggards_table(&[
            row(
                "lan-a-17",
                State::Running,
                Answer::NotReady {
                    code: 503,
                    reason: "no live peer yet".into(),
                },
            ),
            row("gw-b", State::Paused, Answer::NotRunning),
            row(
                "lan-c-3",
                State::Running,
                Answer::NoAnswer("connect 10.214.3.9:7100: timed out".into()),
            ),
            row("lan-b-2", State::Running, Answer::NoAddress),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        let cells = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(cells(lines[0]), ["node", "state", "/ready", "reason"]);
        assert_eq!(
            cells(lines[1]),
            ["lan-a-17", "running", "503", "no", "live", "peer", "yet"]
        );
        assert_eq!(
            cells(lines[2]),
            ["gw-b", "paused", "-", "container", "not", "running"]
        );
        assert!(
            lines[3].ends_with("no answer: connect 10.214.3.9:7100: timed out"),
            "{table}"
        );
        assert!(lines[4].contains("no address on its LAN yet"), "{table}");
        // The columns line up: every state starts where the header's does.
        let at = lines[0].find("state").unwrap();
        for l in &lines[1..] {
            assert_eq!(&l[at - 1..at], " ", "{table}");
            assert_ne!(&l[at..=at], " ", "{table}");
        }
    }

    #[test]
    fn off_a_terminal_progress_prints_a_line_every_few_seconds_and_the_last() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut p = Progress::new(false);
        assert_eq!(
            p.update(t0, 0, 123, s(0)).as_deref(),
            Some("ready 0/123 (0 s)\n")
        );
        assert_eq!(p.update(t0 + s(1), 10, 123, s(1)), None);
        assert_eq!(p.update(t0 + s(4), 60, 123, s(4)), None);
        assert_eq!(
            p.update(t0 + s(5), 87, 123, s(5)).as_deref(),
            Some("ready 87/123 (5 s)\n")
        );
        assert_eq!(p.update(t0 + s(6), 100, 123, s(6)), None);
        assert_eq!(
            p.update(t0 + s(7), 123, 123, s(7)).as_deref(),
            Some("ready 123/123 (7 s)\n")
        );
        assert_eq!(p.finish(), "");
    }

    #[test]
    fn on_a_terminal_progress_rewrites_its_line_every_round() {
        let t0 = Instant::now();
        let mut p = Progress::new(true);
        assert_eq!(
            p.update(t0, 87, 123, Duration::from_secs(12)).as_deref(),
            Some("\rready 87/123 (12 s) ")
        );
        assert_eq!(
            p.update(t0, 123, 123, Duration::from_secs(13)).as_deref(),
            Some("\rready 123/123 (13 s)\n")
        );
        assert_eq!(p.finish(), "\n");
    }
}
