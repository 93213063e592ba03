//! The configuration page: view the running file (secrets masked), edit it,
//! validate it with the config crate's precise errors shown at their line,
//! apply it, see the history of applied files and roll back to one.
//!
//! Invariants:
//! - Secrets (`password`, `token`, `admin_password_hash`) are never sent to
//!   a browser: found by parsing the file (so inline tables and dotted keys
//!   are covered, not only `key = value` lines), they are shown as
//!   [`MASK`]; a secret still holding the mask when the file comes back
//!   gets its value from the running file (same key path).
//! - A file that does not validate, or whose rule chains do not load, is
//!   never written.
//! - Applying writes the new file atomically (temporary file, fsync,
//!   rename), keeps the previous one in `<data_dir>/config-history/` (the
//!   newest [`HISTORY`] kept), records an audit event, then restarts
//!   outpostd in place to run it (the same process id; sessions end).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Form;
use serde::Deserialize;

use super::auth::Role;
use super::pages::{render, Me, PageUser};
use super::Shared;

pub const MASK: &str = "********";
/// Applied files kept for rollback.
pub const HISTORY: usize = 20;
const SECRET_KEYS: [&str; 3] = ["password", "token", "admin_password_hash"];

/// The key of a `key = value` line, if it is a secret's (the fallback for
/// text that does not parse as TOML).
fn secret_key(line: &str) -> Option<&str> {
    let (k, _) = line.split_once('=')?;
    let k = k.trim();
    SECRET_KEYS.contains(&k).then_some(k)
}

/// A secret's value in a file: its key path (array elements as `#n`, so
/// the same key in two devices is told apart), the byte range of the value
/// as written, and whether it is the mask itself.
struct SecretValue {
    path: String,
    span: std::ops::Range<usize>,
    masked: bool,
}

/// Every secret's value in `text`, found by parsing it: a secret written as
/// `password = …`, inside an inline table (`mqtt = { password = … }`) or as
/// a dotted key (`mqtt.password = …`) is found alike. Parts that do not
/// parse yield nothing (the line fallback covers them).
fn secret_values(text: &str) -> Vec<SecretValue> {
    use toml::de::{DeTable, DeValue};
    fn walk(table: &DeTable<'_>, path: &str, out: &mut Vec<SecretValue>) {
        for (k, v) in table {
            let here = format!("{path}.{}", k.get_ref());
            match v.get_ref() {
                DeValue::Table(t) => walk(t, &here, out),
                DeValue::Array(items)
                    if items
                        .iter()
                        .any(|i| matches!(i.get_ref(), DeValue::Table(_))) =>
                {
                    for (n, item) in items.iter().enumerate() {
                        if let DeValue::Table(t) = item.get_ref() {
                            walk(t, &format!("{here}#{n}"), out);
                        }
                    }
                }
                value if SECRET_KEYS.contains(&k.get_ref().as_ref()) => out.push(SecretValue {
                    path: here,
                    span: v.span(),
                    masked: matches!(value, DeValue::String(s) if s == MASK),
                }),
                _ => {}
            }
        }
    }
    let (doc, _errors) = DeTable::parse_recoverable(text);
    let mut out = Vec::new();
    walk(doc.get_ref(), "", &mut out);
    out.retain(|v| text.get(v.span.clone()).is_some());
    out.sort_by_key(|v| v.span.start);
    out
}

/// `text` with each range in `edits` (sorted, not overlapping) replaced.
fn splice(text: &str, edits: &[(std::ops::Range<usize>, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (span, with) in edits {
        if span.start < at {
            continue;
        }
        out.push_str(&text[at..span.start]);
        out.push_str(with);
        at = span.end;
    }
    out.push_str(&text[at..]);
    out
}

/// The file as a browser may see it: every secret's value replaced by
/// [`MASK`], wherever and however it is written. Lines that do not parse
/// are masked by their key as well, so a broken file leaks nothing either.
pub fn mask(text: &str) -> String {
    let quoted = format!("\"{MASK}\"");
    let edits: Vec<_> = secret_values(text)
        .into_iter()
        .map(|v| (v.span, quoted.clone()))
        .collect();
    let spanned = splice(text, &edits);
    let mut out = String::with_capacity(spanned.len());
    for line in spanned.lines() {
        // Masked already: the value itself is the mask (the mask written
        // elsewhere on the line, in a comment say, is not).
        let is_masked = line
            .split_once('=')
            .is_some_and(|(_, v)| v.trim_start().starts_with(&quoted));
        match secret_key(line.trim()).filter(|_| !is_masked) {
            Some(k) => {
                let indent = &line[..line.len() - line.trim_start().len()];
                out.push_str(&format!("{indent}{k} = {quoted}"));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// `edited` with each secret still holding the mask given back its value
/// from `running` (the same key path), written as it was there. A secret
/// typed anew is kept; a masked one with no counterpart stays masked (and
/// so never silently becomes an empty or literal password).
pub fn unmask(edited: &str, running: &str) -> String {
    let originals: std::collections::HashMap<String, &str> = secret_values(running)
        .into_iter()
        .filter_map(|v| Some((v.path, running.get(v.span)?)))
        .collect();
    let edits: Vec<_> = secret_values(edited)
        .into_iter()
        .filter(|v| v.masked)
        .filter_map(|v| Some((v.span, (*originals.get(&v.path)?).to_string())))
        .collect();
    splice(edited, &edits)
}

/// `text` with `tags` (TOML `[[device.modbus.tag]]` sections) added at the
/// end of the `[[device]]` whose `name` is `device`, or `None` if no such
/// device is in the file.
pub fn insert_tags(text: &str, device: &str, tags: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let is_header = |l: &str| l.trim_start().starts_with('[');
    let mut start = None;
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() == "[[device]]" {
            // This device's own keys run to the next header.
            let mut j = i + 1;
            while j < lines.len() && !is_header(lines[j]) {
                let kv = lines[j]
                    .split_once('=')
                    .map(|(k, v)| (k.trim(), v.trim().trim_matches('"')));
                if kv == Some(("name", device)) {
                    start = Some(i);
                }
                j += 1;
            }
            if start.is_some() {
                break;
            }
        }
        i += 1;
    }
    let start = start?;
    // The block ends before the next header that is not one of its own
    // sub-tables (`[device.…]`, `[[device.…]]`).
    let mut end = start + 1;
    while end < lines.len() {
        let t = lines[end].trim_start();
        if is_header(t) && !t.starts_with("[device.") && !t.starts_with("[[device.") {
            break;
        }
        end += 1;
    }
    while end > start + 1 && lines[end - 1].trim().is_empty() {
        end -= 1;
    }
    let mut out = String::with_capacity(text.len() + tags.len() + 2);
    for l in &lines[..end] {
        out.push_str(l);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(tags.trim_end());
    out.push('\n');
    for l in &lines[end..] {
        out.push_str(l);
        out.push('\n');
    }
    Some(out)
}

/// A problem found in a file: where, and what.
#[derive(Debug, Clone)]
pub struct Problem {
    pub line: usize,
    pub column: usize,
    pub key_path: String,
    pub message: String,
}

/// Every problem of `text` (empty: it would run).
pub fn check(text: &str, file: &str, base: &Path) -> Vec<Problem> {
    match outpost_config::parse(text, file) {
        Err(errors) => errors
            .0
            .into_iter()
            .map(|e| Problem {
                line: e.line,
                column: e.column,
                key_path: e.key_path,
                message: e.message,
            })
            .collect(),
        Ok(cfg) => match outpost_rules::build(&cfg, base) {
            Ok(_) => Vec::new(),
            Err(errors) => errors
                .into_iter()
                .map(|m| Problem {
                    line: 0,
                    column: 0,
                    key_path: "rules".into(),
                    message: m,
                })
                .collect(),
        },
    }
}

/// One line of the listing, with the problems found on it.
#[derive(Debug)]
struct Listed {
    n: usize,
    text: String,
    problems: Vec<String>,
}

struct Entry {
    name: String,
    when: String,
    who: String,
}

fn history_dir(s: &Shared) -> PathBuf {
    s.data_dir.join("config-history")
}

/// Applied files, newest first: (file name, when, who).
fn history(s: &Shared) -> Vec<Entry> {
    let Ok(rd) = std::fs::read_dir(history_dir(s)) else {
        return Vec::new();
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort_unstable_by(|a, b| b.cmp(a));
    names
        .into_iter()
        .map(|name| {
            let stem = name.trim_end_matches(".toml");
            let (ms, who) = stem.split_once('-').unwrap_or((stem, ""));
            let when = ms
                .parse::<i64>()
                .map(super::time::format_utc)
                .unwrap_or_default();
            Entry {
                when,
                who: who.to_string(),
                name,
            }
        })
        .collect()
}

/// A kept configuration document (`<data_dir>/config/history`).
struct DocEntry {
    version: u64,
    hash: String,
    lines: usize,
}

/// The kept documents, newest first.
fn documents(s: &Shared) -> Vec<outpost_config::document::Document> {
    crate::remote::store::Store::new(&s.data_dir, 100).history()
}

fn short(hash: &str) -> String {
    hash.strip_prefix("sha256:")
        .unwrap_or(hash)
        .chars()
        .take(12)
        .collect()
}

/// The running document, in a line: version, hash, where it came from.
fn running_line(s: &Shared) -> Option<String> {
    let r = s.running.as_ref()?.read().ok()?;
    Some(format!(
        "version {} (sha256 {}…), {}",
        r.version,
        short(&r.hash),
        r.source
    ))
}

#[derive(Template)]
#[template(path = "config.html")]
struct ConfigPage {
    gateway: String,
    me: Option<Me>,
    page: &'static str,
    path: String,
    editable: bool,
    text: String,
    listing: Vec<Listed>,
    problems: Vec<Problem>,
    message: Option<String>,
    history: Vec<Entry>,
    running: Option<String>,
    documents: Vec<DocEntry>,
    csrf: String,
}

fn page(
    s: &Shared,
    user: &PageUser,
    status: StatusCode,
    text: String,
    problems: Vec<Problem>,
    message: Option<String>,
) -> Response {
    let listing = if problems.is_empty() {
        Vec::new()
    } else {
        text.lines()
            .enumerate()
            .map(|(i, l)| Listed {
                n: i + 1,
                text: l.to_string(),
                problems: problems
                    .iter()
                    .filter(|p| p.line == i + 1)
                    .map(|p| {
                        if p.key_path.is_empty() {
                            format!("column {}: {}", p.column, p.message)
                        } else {
                            format!("column {}: {}: {}", p.column, p.key_path, p.message)
                        }
                    })
                    .collect(),
            })
            .collect()
    };
    let mut r = render(&ConfigPage {
        gateway: s.gateway.clone(),
        me: user.me(),
        page: "config",
        path: s.config_path.as_ref().map_or_else(
            || "the embedded demo configuration".into(),
            |p| p.display().to_string(),
        ),
        editable: s.config_path.is_some() && user.0.role >= Role::Admin,
        text,
        listing,
        problems,
        message,
        history: history(s),
        running: running_line(s),
        documents: documents(s)
            .into_iter()
            .map(|d| DocEntry {
                version: d.version,
                hash: short(&d.hash),
                lines: d.body.lines().count(),
            })
            .collect(),
        csrf: user.0.csrf.clone(),
    });
    *r.status_mut() = status;
    r
}

/// What runs: the running document (which may have come from the cloud),
/// else the file.
fn running_text(s: &Shared) -> String {
    if let Some(body) = s
        .running
        .as_ref()
        .and_then(|r| r.read().ok().map(|r| r.body.clone()))
    {
        return body;
    }
    match &s.config_path {
        Some(p) => std::fs::read_to_string(p).unwrap_or_default(),
        None => outpost_config::DEMO_TOML.to_string(),
    }
}

/// `GET /config`.
pub async fn view(State(s): State<Arc<Shared>>, user: PageUser) -> Response {
    page(
        &s,
        &user,
        StatusCode::OK,
        mask(&running_text(&s)),
        Vec::new(),
        None,
    )
}

#[derive(Debug, Deserialize)]
pub struct EditForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    text: String,
    /// `validate` or `apply`.
    #[serde(default)]
    action: String,
}

/// What became of a submitted file.
enum Outcome {
    /// The demo runs: there is no file.
    Demo,
    Invalid(Vec<Problem>),
    Valid,
    /// Applied: in place by the configuration manager (what changed), or
    /// (`None`) by a restart.
    Applied(Option<String>),
    Failed(String),
}

/// Validates `edited` (secrets still masked) and, with `apply`, applies it.
/// Checks of an edited file running now: at most one.
static CHECKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

async fn submit(s: &Shared, user: &str, edited: &str, apply_it: bool) -> Outcome {
    let Some(path) = s.config_path.clone() else {
        return Outcome::Demo;
    };
    let full = unmask(edited, &running_text(s));
    let base = path
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let file = path
        .file_name()
        .map_or_else(|| "config".into(), |n| n.to_string_lossy().into_owned());
    let problems = {
        // A check of a large file takes tens of megabytes for a moment: one
        // at a time, whoever asks (the others wait their turn).
        let Ok(_turn) = CHECKS.acquire().await else {
            return Outcome::Failed("the configuration checks are shut down".into());
        };
        check(&full, &file, &base)
    };
    if !problems.is_empty() {
        return Outcome::Invalid(problems);
    }
    if !apply_it {
        return Outcome::Valid;
    }
    match apply(s, &path, &full, user).await {
        Ok(in_place) => Outcome::Applied(in_place),
        Err(e) => Outcome::Failed(e),
    }
}

const DEMO_REFUSAL: &str =
    "outpostd runs the embedded demo: start it with --config FILE to edit a configuration here";
const APPLIED: &str = "Applied. outpostd restarts with it now; log in again in a few seconds.";

/// `POST /config`: validate or apply an edited file.
pub async fn edit(
    State(s): State<Arc<Shared>>,
    user: PageUser,
    Form(f): Form<EditForm>,
) -> Response {
    if let Err(r) = user.check(&f.csrf).and_then(|()| user.require(Role::Admin)) {
        return r.into_response();
    }
    let edited = f.text.replace("\r\n", "\n");
    match submit(&s, &user.0.user, &edited, f.action == "apply").await {
        Outcome::Demo => page(
            &s,
            &user,
            StatusCode::CONFLICT,
            edited,
            Vec::new(),
            Some(DEMO_REFUSAL.into()),
        ),
        Outcome::Invalid(problems) => {
            let n = problems.len();
            page(
                &s,
                &user,
                StatusCode::UNPROCESSABLE_ENTITY,
                edited,
                problems,
                Some(format!("{n} problem(s); nothing was changed.")),
            )
        }
        Outcome::Valid => page(
            &s,
            &user,
            StatusCode::OK,
            edited,
            Vec::new(),
            Some("The configuration is valid. Apply it to run it.".into()),
        ),
        Outcome::Applied(in_place) => {
            let text = mask(&running_text(&s));
            let notice = match in_place {
                Some(changed) => {
                    format!("Applied in place ({changed}); it proved healthy and is kept.")
                }
                None => APPLIED.into(),
            };
            page(&s, &user, StatusCode::OK, text, Vec::new(), Some(notice))
        }
        Outcome::Failed(e) => page(
            &s,
            &user,
            StatusCode::INTERNAL_SERVER_ERROR,
            edited,
            Vec::new(),
            Some(format!("Not applied: {e}")),
        ),
    }
}

/// `GET /api/v1/config`: the running file, secrets masked.
pub async fn api_view(State(s): State<Arc<Shared>>, _user: super::api::ApiUser) -> Response {
    axum::Json(serde_json::json!({
        "path": s.config_path.as_ref().map(|p| p.display().to_string()),
        "text": mask(&running_text(&s)),
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
pub struct ApiEdit {
    text: String,
}

/// `POST /api/v1/config/validate` and `/apply`: the page's checks, as
/// JSON: `{valid, problems: [{line, column, key_path, message}]}`.
pub async fn api_submit(
    State(s): State<Arc<Shared>>,
    user: super::api::ApiUser,
    axum::extract::Path(action): axum::extract::Path<String>,
    body: Result<axum::Json<ApiEdit>, axum::extract::rejection::JsonRejection>,
) -> Response {
    use super::api::error;
    if user.0.role < Role::Admin {
        return error(
            StatusCode::FORBIDDEN,
            "changing the configuration needs the admin role",
        );
    }
    let apply_it = match action.as_str() {
        "validate" => false,
        "apply" => true,
        _ => return error(StatusCode::NOT_FOUND, "no such API route"),
    };
    let axum::Json(b) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let edited = b.text.replace("\r\n", "\n");
    let (status, v) = match submit(&s, &user.0.user, &edited, apply_it).await {
        Outcome::Demo => return error(StatusCode::CONFLICT, DEMO_REFUSAL),
        Outcome::Failed(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("not applied: {e}"),
            )
        }
        Outcome::Invalid(problems) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            serde_json::json!({"valid": false, "applied": false, "problems": problems.iter().map(|p| serde_json::json!({
                "line": p.line, "column": p.column, "key_path": p.key_path, "message": p.message,
            })).collect::<Vec<_>>()}),
        ),
        Outcome::Valid => (
            StatusCode::OK,
            serde_json::json!({"valid": true, "applied": false, "problems": []}),
        ),
        Outcome::Applied(in_place) => (
            StatusCode::OK,
            serde_json::json!({"valid": true, "applied": true, "problems": [],
                "restart": in_place.is_none(), "changed": in_place}),
        ),
    };
    (status, axum::Json(v)).into_response()
}

/// Hands `text` to the configuration manager (applied by diff, with its
/// health check and rollback); a change only a restart can make
/// (`[gateway]`, `[web]`, `[remote]`) restarts outpostd with it instead.
/// Either way the file is kept as applied. `Ok(Some(changed))`: applied in
/// place.
async fn apply(s: &Shared, path: &Path, text: &str, user: &str) -> Result<Option<String>, String> {
    if let Some(manager) = &s.manager {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let req = crate::remote::Request {
            origin: crate::remote::Origin::Local,
            doc: Ok(outpost_config::document::Document::new(0, text.to_string())),
            reply: Some(reply),
        };
        if manager.send(req).await.is_ok() {
            if let Ok(report) = rx.await {
                use crate::remote::State;
                let restart_only = report.state == State::Rejected
                    && !report.errors.is_empty()
                    && report
                        .errors
                        .iter()
                        .all(|e| e.contains(crate::parts::RESTART_ONLY));
                match report.state {
                    State::Applied | State::Unchanged => {
                        write_kept(s, path, text, user).await?;
                        return Ok(Some(report.changed));
                    }
                    _ if restart_only => {}
                    _ => return Err(report.errors.join("; ")),
                }
            }
        }
    }
    write_kept(s, path, text, user).await?;
    tracing::info!(config = %path.display(), %user, "A new configuration was applied from the web page; restarting.");
    s.restart.cancel();
    Ok(None)
}

/// Keeps the running file in the history, writes `text` in its place and
/// audits.
async fn write_kept(s: &Shared, path: &Path, text: &str, user: &str) -> Result<(), String> {
    let dir = history_dir(s);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let previous = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let kept = dir.join(format!("{:013}-{user}.toml", s.clock.now().unix_ms.max(0)));
    super::auth::write_private(&kept, &previous).map_err(|e| format!("{}: {e}", kept.display()))?;
    let mut old: Vec<_> = history(s).into_iter().skip(HISTORY).collect();
    for e in old.drain(..) {
        let _gone = std::fs::remove_file(dir.join(e.name));
    }
    super::auth::write_private(path, text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    s.audit(
        "config.applied",
        user,
        format!(
            "{} ({} bytes); the previous file is kept as {}",
            path.display(),
            text.len(),
            kept.display()
        ),
    )
    .await;
    Ok(())
}

#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    #[serde(default)]
    name: String,
}

/// `GET /config/history?name=…`: an earlier file, in the editor, ready to
/// validate and apply (the rollback).
pub async fn earlier(
    State(s): State<Arc<Shared>>,
    user: PageUser,
    Query(q): Query<HistoryQuery>,
) -> Response {
    // Only names the history lists: never a path from the request.
    let found = history(&s).into_iter().find(|e| e.name == q.name).map(|e| {
        let text = std::fs::read_to_string(history_dir(&s).join(&e.name)).unwrap_or_default();
        let said = format!(
            "The configuration applied before {} (by {}). Apply it to roll back to it.",
            e.when, e.who
        );
        (text, said)
    });
    let missing = format!("no configuration {:?} in the history", q.name);
    in_editor(&s, &user, found, missing)
}

/// An earlier configuration in the editor with what it is (`found`), or the
/// running one with `missing` (404).
fn in_editor(
    s: &Shared,
    user: &PageUser,
    found: Option<(String, String)>,
    missing: String,
) -> Response {
    match found {
        Some((text, said)) => page(s, user, StatusCode::OK, mask(&text), Vec::new(), Some(said)),
        None => page(
            s,
            user,
            StatusCode::NOT_FOUND,
            mask(&running_text(s)),
            Vec::new(),
            Some(missing),
        ),
    }
}

#[derive(Debug, Deserialize)]
pub struct DocumentQuery {
    #[serde(default)]
    version: u64,
}

/// `GET /config/document?version=N`: a kept configuration document in the
/// editor, ready to apply (a manual rollback).
pub async fn document(
    State(s): State<Arc<Shared>>,
    user: PageUser,
    Query(q): Query<DocumentQuery>,
) -> Response {
    let found = documents(&s)
        .into_iter()
        .find(|d| d.version == q.version)
        .map(|d| {
            let said = format!(
                "The configuration document version {} (sha256 {}…). Apply it to go back to it.",
                d.version,
                short(&d.hash)
            );
            (d.body, said)
        });
    let missing = format!("no document version {} is kept", q.version);
    in_editor(&s, &user, found, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "[gateway]\nid = \"gw\"\n[[uplink]]\nname = \"a\"\n[uplink.mqtt]\nurl = \"mqtt://h\"\npassword = \"first\"\n[[uplink]]\nname = \"b\"\n[uplink.nats]\nurl = \"nats://h\"\n  token = \"second\"\n";

    #[test]
    fn tags_go_to_the_end_of_their_device() {
        let text = "[gateway]\nid = \"gw\"\n\n[[device]]\nname = \"a\"\n[device.modbus]\ntcp = \"h:502\"\n[[device.modbus.tag]]\nname = \"x\"\ntable = \"holding\"\naddress = 0\n\n[[device]]\nname = \"b\"\n[device.sim]\ninterval = \"1s\"\n[[device.sim.tag]]\nname = \"t\"\nsine = { period = \"10s\" }\n\n[web]\nenabled = true\n";
        let tag = "[[device.modbus.tag]]\nname = \"holding_5\"\ntable = \"holding\"\naddress = 5\n";
        let out = insert_tags(text, "a", tag).unwrap();
        let cfg = outpost_config::parse(&out, "t.toml").unwrap();
        let tags: Vec<&str> = cfg.devices[0]
            .modbus
            .as_ref()
            .unwrap()
            .tags
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(tags, ["x", "holding_5"]);
        assert!(cfg.devices[1].sim.is_some());
        // The last device of the file, followed by another table.
        let text2 = text.replace("[[device]]\nname = \"b\"\n[device.sim]\ninterval = \"1s\"\n[[device.sim.tag]]\nname = \"t\"\nsine = { period = \"10s\" }\n\n", "");
        let out = insert_tags(&text2, "a", tag).unwrap();
        let cfg = outpost_config::parse(&out, "t.toml").unwrap();
        assert_eq!(cfg.devices[0].modbus.as_ref().unwrap().tags.len(), 2);
        assert!(cfg.web.enabled);
        assert_eq!(insert_tags(text, "nobody", tag), None);
    }

    #[test]
    fn secrets_are_masked_and_come_back_from_the_running_file() {
        let m = mask(FILE);
        assert!(!m.contains("first") && !m.contains("second"), "{m}");
        assert!(m.contains("password = \"********\"") && m.contains("  token = \"********\""));
        // Untouched: the same file.
        assert_eq!(unmask(&m, FILE), FILE);
        // An edit elsewhere keeps both secrets; a secret typed anew wins.
        let edited = m
            .replace("name = \"b\"", "name = \"c\"")
            .replace("password = \"********\"", "password = \"new\"");
        let back = unmask(&edited, FILE);
        assert!(
            back.contains("password = \"new\"") && back.contains("token = \"second\""),
            "{back}"
        );
        assert!(!back.contains(MASK));
    }

    #[test]
    fn secrets_in_inline_tables_dotted_keys_and_broken_files_are_masked() {
        let file = "[gateway]\nid = \"gw\"\n[[uplink]]\nname = \"a\"\nmqtt = { url = \"mqtt://h\", password = \"inline-secret\" }\n[[uplink]]\nname = \"b\"\nnats.url = \"nats://h\"\nnats.token = 'dotted-secret' # kept\n[web]\nadmin_password_hash = \"\"\"hash-secret\"\"\"\n";
        let m = mask(file);
        for secret in ["inline-secret", "dotted-secret", "hash-secret"] {
            assert!(!m.contains(secret), "{secret} reached the page:\n{m}");
        }
        assert!(
            m.contains("url = \"mqtt://h\", password = \"********\" }"),
            "{m}"
        );
        assert!(m.contains("nats.token = \"********\" # kept"), "{m}");
        // Masked and given back: the very same file, quoting included.
        assert_eq!(unmask(&m, file), file);
        // The two uplinks' secrets are told apart by their key paths even
        // after the second one is rewritten as a table of its own.
        let edited = m.replace(
            "nats.url = \"nats://h\"\nnats.token = \"********\" # kept",
            "[uplink.nats]\nurl = \"nats://h\"\ntoken = \"********\"",
        );
        let back = unmask(&edited, file);
        assert!(
            back.contains("token = 'dotted-secret'")
                && back.contains("password = \"inline-secret\""),
            "{back}"
        );
        // A masked secret with no counterpart stays masked: never a
        // literal or an empty password.
        let moved = m.replace(
            "name = \"a\"",
            "name = \"a\"\nextra = { password = \"********\" }",
        );
        assert!(unmask(&moved, file).contains("extra = { password = \"********\" }"));
        // A file that does not parse still shows no secret.
        let broken = "[web\npassword = \"plain\"\ntoken = \"leak\" # was \"********\"\nmqtt = { password = \"x\"";
        let m = mask(broken);
        assert!(!m.contains("plain"), "{m}");
        assert!(
            !m.contains("leak"),
            "the mask in a comment is not a masked value:\n{m}"
        );
    }
}
