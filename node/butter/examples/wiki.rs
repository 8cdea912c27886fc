//! `wiki`: articles stored in the network, with a small web page to add and find them.
//!
//!     cargo run -p butter --example wiki -- --listen 127.0.0.1:7401 --web 127.0.0.1:8401
//!     cargo run -p butter --example wiki -- --listen 127.0.0.1:7402 --web 127.0.0.1:8402 --peer 127.0.0.1:7401
//!
//! Open http://127.0.0.1:8402/ — an article added on one node is listed and readable on the other.
//! An article is an *owned item* (`butter::owned`): named by the wiki's owner key and its title,
//! its value the JSON title + text, kept alive by its Peer Content Group. Adding an article whose
//! title exists edits it **in place**: the same id, a higher seq, every holder takes the new text.
//! Each edit is also appended to the article's history, a signed log (`butter_proto::signed_log`)
//! whose entries are chained by hash; the article page shows it, verified. New titles are
//! announced to known peers with a `wiki/announce` behaviour, and reading an article searches the
//! network for its item.
//!
//! Each node signs with its own key unless `--key FILE` names one (`butter-node key new --out
//! FILE`): give every node of one wiki the same file and each can edit every article.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use butter::ItemId;
use butter::owned::{self, OwnerKey, Record};
use butter::{Config, Node, NodeBuilder, behaviour};
use butter_proto::signed_log::Head;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Article {
    title: String,
    text: String,
    /// The last entry of the article's history log.
    history: Option<Head>,
}

/// The owned-item name of an article (a title may hold any character; names may not).
fn article_name(title: &str) -> String {
    format!("a-{}", &ItemId::of(title.as_bytes()).to_string()[..32])
}

/// The name of an article's history log.
fn history_name(title: &str) -> String {
    format!("h-{}", &ItemId::of(title.as_bytes()).to_string()[..32])
}

/// Title → item id, learnt locally and from announcements.
type Index = Arc<Mutex<BTreeMap<String, String>>>;

#[derive(Clone)]
struct App {
    node: Node,
    index: Index,
    key: Arc<OwnerKey>,
    /// The last version and history head this node wrote per title.
    mine: Arc<Mutex<BTreeMap<String, (u64, Head)>>>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=utf-8><title>{t} · butter wiki</title></head>\
         <body><h1>{t}</h1>{body}<hr><form method=post action=/articles>\
         <p><input name=title placeholder=Title required></p>\
         <p><textarea name=text rows=6 cols=60 placeholder=Text required></textarea></p>\
         <p><button type=submit>Add or edit article</button> (an existing title is edited in place)</p></form>\
         <form method=get action=/find><input name=id placeholder='article id' size=70><button>Find</button></form>\
         </body></html>",
        t = escape(title)
    ))
}

async fn home(State(app): State<App>) -> Html<String> {
    let index = app.index.lock().map(|i| i.clone()).unwrap_or_default();
    let mut list = String::from("<ul id=articles>");
    for (title, id) in &index {
        list.push_str(&format!(
            "<li><a href='/articles/{id}'>{}</a></li>",
            escape(title)
        ));
    }
    list.push_str("</ul>");
    page(&format!("Wiki on node {}", app.node.id().short()), &list)
}

#[derive(Deserialize)]
struct NewArticle {
    title: String,
    text: String,
}

/// The article `title` as the network has it now (its record), if it exists.
async fn current(app: &App, title: &str) -> Option<(Record, Article)> {
    let (record, _) = app
        .node
        .get_owned(app.key.id(), &article_name(title))
        .await
        .ok()?;
    let article = serde_json::from_slice(record.value()?).ok()?;
    Some((record, article))
}

/// Adds the article, or edits it in place: the next seq of the same owned item, and one more
/// entry in its history.
async fn save(app: &App, title: String, text: String) -> anyhow::Result<ItemId> {
    let known = app
        .index
        .lock()
        .map(|i| i.contains_key(&title))
        .unwrap_or(false);
    // The newest version: the network's, or at least the last this node wrote.
    let mine = app.mine.lock().ok().and_then(|m| m.get(&title).copied());
    let (seq, head) = match (known, mine) {
        (false, _) => (1, None),
        (true, mine) => match current(app, &title).await {
            Some((r, a)) if mine.is_none_or(|(s, _)| r.seq() >= s) => (r.seq() + 1, a.history),
            _ => mine.map_or((1, None), |(s, h)| (s + 1, Some(h))),
        },
    };
    let head = app.node.append_log(
        &app.key,
        &history_name(&title),
        head,
        text.as_bytes().to_vec(),
    )?;
    let article = Article {
        title: title.clone(),
        text,
        history: Some(head),
    };
    let record = Record::sign(
        &app.key,
        &article_name(&title),
        seq,
        Some(serde_json::to_vec(&article)?),
    )?;
    let placed = app.node.put_owned(&record)?;
    if let Ok(mut m) = app.mine.lock() {
        m.insert(title, (seq, head));
    }
    if !known {
        // A new article: this node searches for its group, finds none and places it here; wait
        // for that (bounded), so the page it redirects to reads from any node at once.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
        while app.node.owned_version(&placed.id()).is_none()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    Ok(placed.id())
}

async fn add(State(app): State<App>, Form(a): Form<NewArticle>) -> Response {
    let title = a.title.trim().to_string();
    match save(&app, title.clone(), a.text).await {
        Ok(id) => {
            let id = id.to_string();
            if let Ok(mut i) = app.index.lock() {
                i.insert(title.clone(), id.clone());
            }
            let note = serde_json::to_vec(&(title, id.clone())).unwrap_or_default();
            for peer in app.node.peers() {
                if let Ok(pid) = peer.id.parse() {
                    let _ = app.node.request(pid, "wiki/announce", note.clone()).await;
                }
            }
            Redirect::to(&format!("/articles/{id}")).into_response()
        }
        Err(e) => (StatusCode::INSUFFICIENT_STORAGE, format!("{e:#}")).into_response(),
    }
}

async fn show(State(app): State<App>, Path(id): Path<String>) -> Response {
    let Ok(item) = id.parse::<ItemId>() else {
        return (
            StatusCode::BAD_REQUEST,
            page("Bad id", "<p>Article ids are 64 hex characters.</p>"),
        )
            .into_response();
    };
    match app.node.get(item).await {
        Ok(found) => match owned::Record::decode(&found.content).ok().and_then(|r| {
            Some((
                r.seq(),
                r.owner(),
                serde_json::from_slice::<Article>(r.value()?).ok()?,
            ))
        }) {
            Some((seq, owner, a)) => {
                let history = history(&app, owner, &a).await;
                page(
                    &a.title,
                    &format!(
                        "<article id=text>{}</article><p><small>version {seq}, found {} hop(s) away in {:.1} ms</small></p>{history}",
                        escape(&a.text),
                        found.hops,
                        found.elapsed_ms
                    ),
                )
                .into_response()
            }
            None => (
                StatusCode::UNPROCESSABLE_ENTITY,
                page("Not an article", "<p>That item is not a wiki article.</p>"),
            )
                .into_response(),
        },
        Err(e) => (
            StatusCode::NOT_FOUND,
            page("Not found", &format!("<p>{}</p>", escape(&e.to_string()))),
        )
            .into_response(),
    }
}

/// The article's history, verified entry by entry against its owner, as an HTML list.
async fn history(app: &App, owner: owned::OwnerId, a: &Article) -> String {
    if a.history.is_none() {
        return String::new();
    }
    match app
        .node
        .read_log(owner, &history_name(&a.title), 1000)
        .await
    {
        Ok((_, entries)) => {
            let mut out = String::from("<h2>History</h2><ol id=history>");
            for e in entries {
                let text = String::from_utf8_lossy(e.payload());
                let short: String = text.chars().take(80).collect();
                out.push_str(&format!("<li>{}</li>", escape(&short)));
            }
            out.push_str("</ol>");
            out
        }
        Err(e) => format!(
            "<p><small>history unavailable: {}</small></p>",
            escape(&e.to_string())
        ),
    }
}

#[derive(Deserialize)]
struct Find {
    id: String,
}

async fn find(axum::extract::Query(f): axum::extract::Query<Find>) -> Redirect {
    Redirect::to(&format!("/articles/{}", f.id.trim()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut listen: SocketAddr = "127.0.0.1:0".parse()?;
    let mut web: SocketAddr = "127.0.0.1:8400".parse()?;
    let mut peers: Vec<SocketAddr> = Vec::new();
    let mut key_file: Option<std::path::PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--listen" => listen = value()?.parse().context("--listen takes ip:port")?,
            "--web" => web = value()?.parse().context("--web takes ip:port")?,
            "--peer" => peers.push(value()?.parse().context("--peer takes ip:port")?),
            "--key" => key_file = Some(value()?.into()),
            "--help" | "-h" => {
                println!(
                    "usage: wiki [--listen ADDR] [--web ADDR] [--peer ADDR]... [--key OWNER_KEY_FILE]"
                );
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other}; see --help"),
        }
    }
    let index: Index = Arc::default();
    let learnt = index.clone();
    let mut cfg = Config::for_tests();
    cfg.listen = listen;
    cfg.alone = true;
    let node = NodeBuilder::new(cfg)
        .behaviour(
            "wiki/announce",
            behaviour::from_fn(move |_ctx, body: Bytes| {
                let learnt = learnt.clone();
                async move {
                    let (title, id): (String, String) =
                        serde_json::from_slice(&body).map_err(|e| {
                            behaviour::BehaviourError::new(format!("bad announcement: {e}"))
                        })?;
                    if id.parse::<ItemId>().is_ok() {
                        if let Ok(mut i) = learnt.lock() {
                            i.insert(title, id);
                        }
                    }
                    Ok(Bytes::new())
                }
            }),
        )
        .build()
        .await?;
    for p in &peers {
        node.connect(*p)
            .await
            .with_context(|| format!("cannot reach wiki peer {p}"))?;
    }
    let key = match key_file {
        Some(path) => butter::owner::load(&path)?,
        // A fresh key for this run: its articles can be edited through this node only.
        None => butter::owner::fresh()?,
    };
    let app = App {
        node: node.clone(),
        index,
        key: Arc::new(key),
        mine: Arc::default(),
    };
    let router = axum::Router::new()
        .route("/", get(home))
        .route("/articles", axum::routing::post(add))
        .route("/articles/{id}", get(show))
        .route("/find", get(find))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(web)
        .await
        .with_context(|| format!("cannot listen on {web}"))?;
    println!(
        "wiki node {} on {} — open http://{}/",
        node.id().short(),
        node.local_addr()?,
        listener.local_addr()?
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    node.shutdown(std::time::Duration::from_secs(3)).await;
    Ok(())
}
