//! ThingsBoard scripts (JavaScript function bodies over `msg`, `metadata`,
//! `msgType`) run unchanged in QuickJS.
//!
//! Invariants:
//! - One runtime per chain ([`ScriptHost`]), with a memory limit; each
//!   script is compiled once, at load, into a function kept in the runtime.
//! - Every call has a deadline, enforced by QuickJS's interrupt handler; a
//!   script that throws, runs past its deadline, exhausts its memory or
//!   returns the wrong shape yields an error for that message only. The
//!   runtime stays usable afterwards.
//! - Values cross the boundary as JSON, so a script sees exactly what
//!   ThingsBoard would give it and can return nothing but JSON.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rquickjs::{Array, Context, Ctx, Function, Runtime, Value};
use serde_json::Value as Json;

/// The runtime a chain's scripts share.
pub struct ScriptHost {
    runtime: Runtime,
    context: Context,
    /// Deadline of the call in progress, in ns after `epoch`; 0: none.
    deadline: Arc<AtomicU64>,
    epoch: Instant,
    timeout: Duration,
    /// Whether the TBEL helpers loaded (at the first TBEL script).
    prelude: OnceLock<Result<(), String>>,
}

impl std::fmt::Debug for ScriptHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptHost")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A compiled script: its place in the runtime's table of functions
/// (the functions themselves stay inside the runtime).
#[derive(Debug, Clone, Copy)]
pub struct Script {
    index: u32,
}

/// The global array holding compiled scripts.
const TABLE: &str = "__outpost_scripts";

/// Why a call gave no usable result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScriptError {
    #[error("script error: {0}")]
    Thrown(String),
    #[error("script ran longer than {0:?} and was stopped")]
    Timeout(Duration),
    #[error("script returned {0}, expected {1}")]
    Shape(String, &'static str),
}

impl ScriptHost {
    /// A runtime limited to `memory` bytes whose calls may run `timeout`.
    pub fn new(memory: usize, timeout: Duration) -> Result<Self, String> {
        let runtime = Runtime::new().map_err(|e| format!("starting QuickJS: {e}"))?;
        runtime.set_memory_limit(memory);
        runtime.set_max_stack_size(256 * 1024);
        let deadline = Arc::new(AtomicU64::new(0));
        let epoch = Instant::now();
        let d = deadline.clone();
        runtime.set_interrupt_handler(Some(Box::new(move || {
            let at = d.load(Ordering::Relaxed);
            at != 0 && u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX) > at
        })));
        let context = Context::full(&runtime).map_err(|e| format!("starting QuickJS: {e}"))?;
        context
            .with(|ctx| {
                let table = Array::new(ctx.clone())?;
                ctx.globals().set(TABLE, table)
            })
            .map_err(|e| format!("starting QuickJS: {e}"))?;
        Ok(Self {
            runtime,
            context,
            deadline,
            epoch,
            timeout,
            prelude: OnceLock::new(),
        })
    }

    /// Compiles a ThingsBoard script body (`return msg.t > 20;`) into a
    /// function of `msg, metadata, msgType`.
    pub fn compile(&self, body: &str) -> Result<Script, String> {
        self.compile_with(body, &["msg", "metadata", "msgType"])
    }

    /// As [`Self::compile`], for a script over other names (a generator's
    /// `prevMsg, prevMetadata, prevMsgType`).
    pub fn compile_with(&self, body: &str, params: &[&str]) -> Result<Script, String> {
        self.compile_function(format!("(function({}) {{\n{body}\n}})", params.join(", ")))
    }

    /// Compiles a ThingsBoard TBEL script body into a function of `msg,
    /// metadata, msgType`, translated to JavaScript ([`crate::tbel`]). The
    /// error names the line and column in the TBEL source.
    pub fn compile_tbel(&self, body: &str) -> Result<Script, String> {
        self.compile_tbel_with(body, &["msg", "metadata", "msgType"])
    }

    /// As [`Self::compile_tbel`], for a script over other names.
    pub fn compile_tbel_with(&self, body: &str, params: &[&str]) -> Result<Script, String> {
        let js = crate::tbel::translate(body, params).map_err(|e| e.to_string())?;
        // Loaded once; if that fails (a JS script of the chain took the
        // name), every TBEL script of this runtime says so.
        self.prelude
            .get_or_init(|| {
                self.context
                    .with(|ctx| {
                        ctx.eval::<(), _>(crate::tbel::PRELUDE)
                            .map_err(|e| describe(&ctx, e))
                    })
                    .map_err(|e| format!("loading the TBEL helpers: {e}"))
            })
            .clone()?;
        self.compile_function(js)
            .map_err(|e| format!("the translated script does not compile ({e})"))
    }

    /// Compiles JavaScript source that evaluates to a function.
    fn compile_function(&self, src: String) -> Result<Script, String> {
        self.context.with(|ctx| {
            let f: Function = ctx.eval(src).map_err(|e| describe(&ctx, e))?;
            let table: Array = ctx.globals().get(TABLE).map_err(|e| e.to_string())?;
            let index = u32::try_from(table.len()).map_err(|e| e.to_string())?;
            table.set(index as usize, f).map_err(|e| e.to_string())?;
            Ok(Script { index })
        })
    }

    /// Calls `script` and returns its result as JSON (`undefined` → null).
    pub fn call(
        &self,
        script: &Script,
        msg: &Json,
        metadata: &Json,
        msg_type: &str,
    ) -> Result<Json, ScriptError> {
        let start = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let limit = u64::try_from(self.timeout.as_nanos()).unwrap_or(u64::MAX);
        self.deadline
            .store(start.saturating_add(limit).max(1), Ordering::Relaxed);
        let r = self.context.with(|ctx| {
            let f: Function = ctx
                .globals()
                .get::<_, Array>(TABLE)
                .and_then(|t| t.get(script.index as usize))
                .map_err(|e| ScriptError::Thrown(e.to_string()))?;
            let m = ctx
                .json_parse(msg.to_string())
                .map_err(|e| ScriptError::Thrown(describe(&ctx, e)))?;
            let md = ctx
                .json_parse(metadata.to_string())
                .map_err(|e| ScriptError::Thrown(describe(&ctx, e)))?;
            let out: Value = match f.call((m, md, msg_type)) {
                Ok(v) => v,
                Err(e) => {
                    let text = describe(&ctx, e);
                    let timed_out = self.deadline.load(Ordering::Relaxed) != 0
                        && u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
                            > start.saturating_add(limit);
                    return Err(if timed_out && text.contains("interrupted") {
                        ScriptError::Timeout(self.timeout)
                    } else {
                        ScriptError::Thrown(text)
                    });
                }
            };
            if out.is_undefined() {
                return Ok(Json::Null);
            }
            let text = ctx
                .json_stringify(out)
                .map_err(|e| ScriptError::Thrown(describe(&ctx, e)))?;
            match text {
                None => Ok(Json::Null),
                Some(s) => {
                    let s = s
                        .to_string()
                        .map_err(|e| ScriptError::Thrown(e.to_string()))?;
                    serde_json::from_str(&s).map_err(|e| ScriptError::Thrown(e.to_string()))
                }
            }
        });
        self.deadline.store(0, Ordering::Relaxed);
        if matches!(r, Err(ScriptError::Thrown(_))) {
            // After an out-of-memory error, free what the failed call left.
            self.runtime.run_gc();
        }
        r
    }

    /// Bytes the runtime holds (for the per-chain memory figure).
    pub fn memory_used(&self) -> i64 {
        self.runtime.memory_usage().memory_used_size
    }
}

/// The text of an error, with the exception's message when there is one.
fn describe(ctx: &Ctx<'_>, e: rquickjs::Error) -> String {
    if matches!(e, rquickjs::Error::Exception) {
        let v = ctx.catch();
        if let Some(ex) = v.as_exception() {
            let name: Option<String> = ex.get("name").ok();
            let message = ex.message().unwrap_or_default();
            return match name {
                Some(n) if !n.is_empty() => format!("{n}: {message}"),
                _ => message,
            };
        }
        if let Some(s) = v.as_string().and_then(|s| s.to_string().ok()) {
            return s;
        }
        return format!("{v:?}");
    }
    e.to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn host() -> ScriptHost {
        ScriptHost::new(4 << 20, Duration::from_millis(100)).unwrap()
    }

    #[test]
    fn filter_switch_and_transform_snippets() {
        let h = host();
        let f = h.compile("return msg.temperature > 20;").unwrap();
        let md = json!({"deviceName": "d"});
        assert_eq!(
            h.call(
                &f,
                &json!({"temperature": 25}),
                &md,
                "POST_TELEMETRY_REQUEST"
            ),
            Ok(json!(true))
        );
        assert_eq!(
            h.call(
                &f,
                &json!({"temperature": 15}),
                &md,
                "POST_TELEMETRY_REQUEST"
            ),
            Ok(json!(false))
        );
        let s = h
            .compile("if (msg.t > 50) { return ['hot', 'log']; } return ['normal'];")
            .unwrap();
        assert_eq!(
            h.call(&s, &json!({"t": 60}), &md, "X"),
            Ok(json!(["hot", "log"]))
        );
        let t = h
            .compile("msg.f = msg.c * 9 / 5 + 32; metadata.unit = 'F'; return {msg: msg, metadata: metadata, msgType: msgType};")
            .unwrap();
        assert_eq!(
            h.call(&t, &json!({"c": 100}), &md, "POST_TELEMETRY_REQUEST"),
            Ok(
                json!({"msg": {"c": 100, "f": 212}, "metadata": {"deviceName": "d", "unit": "F"},
                      "msgType": "POST_TELEMETRY_REQUEST"})
            )
        );
    }

    #[test]
    fn an_infinite_loop_is_cut_off_and_the_runtime_goes_on() {
        let h = host();
        let s = h.compile("while (true) {}").unwrap();
        assert_eq!(
            h.call(&s, &json!({}), &json!({}), "X"),
            Err(ScriptError::Timeout(Duration::from_millis(100)))
        );
        let ok = h.compile("return 1;").unwrap();
        assert_eq!(h.call(&ok, &json!({}), &json!({}), "X"), Ok(json!(1)));
    }

    #[test]
    fn memory_exhaustion_is_contained() {
        let h = host();
        let s = h
            .compile("var a = []; while (true) { a.push(new Array(10000).fill(1)); }")
            .unwrap();
        let r = h.call(&s, &json!({}), &json!({}), "X");
        assert!(matches!(r, Err(ScriptError::Thrown(_))), "{r:?}");
        let ok = h.compile("return msg.x + 1;").unwrap();
        assert_eq!(h.call(&ok, &json!({"x": 1}), &json!({}), "X"), Ok(json!(2)));
    }

    #[test]
    fn thrown_errors_and_syntax_errors_are_reported() {
        let h = host();
        let s = h.compile("throw new Error('boom');").unwrap();
        assert_eq!(
            h.call(&s, &json!({}), &json!({}), "X"),
            Err(ScriptError::Thrown("Error: boom".into()))
        );
        let e = h.compile("return msg.;").unwrap_err();
        assert!(e.starts_with("SyntaxError: "), "{e}");
    }
}
