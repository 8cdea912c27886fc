//! `wiki`: articles stored in the network, with a small web page to add and find them.
//!
//!     cargo run -p butter --example wiki -- --listen 127.0.0.1:7401 --web 127.0.0.1:8401
//!     cargo run -p butter --example wiki -- --listen 127.0.0.1:7402 --web 127.0.0.1:8402 --peer 127.0.0.1:7401
//!
//! Open http://127.0.0.1:8402/ — an article added on one node is listed and readable on the other.
//! An article is one item (JSON title + text, content-addressed, kept alive by its Peer Content
//! Group); new titles are announced to known peers with a `wiki/announce` behaviour, and reading
//! an article searches the network for its item.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use butter::ItemId;
use butter::{Config, Node, NodeBuilder, behaviour};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Article {
    title: String,
    text: String,
}

/// Title → item id, learnt locally and from announcements.
type Index = Arc<Mutex<BTreeMap<String, String>>>;

#[derive(Clone)]
struct App {
    node: Node,
    index: Index,
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
         <p><button type=submit>Add article</button></p></form>\
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

async fn add(State(app): State<App>, Form(a): Form<NewArticle>) -> Response {
    let article = Article {
        title: a.title.trim().to_string(),
        text: a.text,
    };
    let Ok(bytes) = serde_json::to_vec(&article) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    match app.node.put(bytes) {
        Ok(id) => {
            let id = id.to_string();
            if let Ok(mut i) = app.index.lock() {
                i.insert(article.title.clone(), id.clone());
            }
            let note = serde_json::to_vec(&(article.title, id.clone())).unwrap_or_default();
            for peer in app.node.peers() {
                if let Ok(pid) = peer.id.parse() {
                    let _ = app.node.request(pid, "wiki/announce", note.clone()).await;
                }
            }
            Redirect::to(&format!("/articles/{id}")).into_response()
        }
        Err(e) => (StatusCode::INSUFFICIENT_STORAGE, e.to_string()).into_response(),
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
        Ok(found) => match serde_json::from_slice::<Article>(&found.content) {
            Ok(a) => page(
                &a.title,
                &format!(
                    "<article id=text>{}</article><p><small>found {} hop(s) away in {:.1} ms</small></p>",
                    escape(&a.text),
                    found.hops,
                    found.elapsed_ms
                ),
            )
            .into_response(),
            Err(_) => (StatusCode::UNPROCESSABLE_ENTITY, page("Not an article", "<p>That item is not a wiki article.</p>")).into_response(),
        },
        Err(e) => (StatusCode::NOT_FOUND, page("Not found", &format!("<p>{}</p>", escape(&e.to_string())))).into_response(),
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
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--listen" => listen = value()?.parse().context("--listen takes ip:port")?,
            "--web" => web = value()?.parse().context("--web takes ip:port")?,
            "--peer" => peers.push(value()?.parse().context("--peer takes ip:port")?),
            "--help" | "-h" => {
                println!("usage: wiki [--listen ADDR] [--web ADDR] [--peer ADDR]...");
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
    let app = App {
        node: node.clone(),
        index,
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
