//! TBEL/JS script bodies, as a script node loads them, and the messages
//! they are called with. The body is compiled as JavaScript and as TBEL
//! (translated to JavaScript). Compiling and calling never panic; a runaway
//! script is stopped by its timeout or its memory limit and the runtime
//! stays usable for the next call.
#![no_main]

use std::cell::RefCell;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use outpost_rules::script::ScriptHost;

thread_local! {
    // One runtime, as one chain has one; the fuzzer is single-threaded.
    // Every compiled script stays in its runtime (a chain compiles its
    // scripts once), so the runtime is renewed before compiled inputs fill
    // its memory limit.
    static HOST: RefCell<ScriptHost> = RefCell::new(host());
}

fn host() -> ScriptHost {
    match ScriptHost::new(4 << 20, Duration::from_millis(20)) {
        Ok(h) => h,
        Err(e) => panic!("QuickJS does not start: {e}"),
    }
}

// The input is `body NUL msg NUL metadata NUL msgType`; a missing or
// non-JSON message or metadata is replaced by a typical one.
fuzz_target!(|data: &[u8]| HOST.with(|cell| {
    if cell.borrow().memory_used() > 2 << 20 {
        cell.replace(host());
    }
    let host = &*cell.borrow();
    let mut parts = data.splitn(4, |&b| b == 0).map(String::from_utf8_lossy);
    let body = parts.next().unwrap_or_default();
    // As TBEL: the translator refuses or produces JavaScript that compiles.
    let tbel = host.compile_tbel(&body);
    if let Err(e) = &tbel {
        assert!(
            !e.contains("does not compile (SyntaxError"),
            "TBEL translated to invalid JavaScript: {e}"
        );
    }
    let Ok(script) = host.compile(&body).or(tbel) else {
        return;
    };
    let json = |p: Option<std::borrow::Cow<'_, str>>, or: serde_json::Value| {
        p.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(or)
    };
    let msg = json(parts.next(), serde_json::json!({"t": 21.5}));
    let metadata = json(parts.next(), serde_json::json!({"deviceName": "a"}));
    let msg_type = parts.next().unwrap_or_default();
    let _out = host.call(&script, &msg, &metadata, &msg_type);
    // The runtime still takes calls after whatever the script did (it may
    // have changed the globals the next script sees: one chain, one runtime).
    if let Ok(probe) = host.compile("return msg.t + 1;") {
        let _next = host.call(
            &probe,
            &serde_json::json!({"t": 1}),
            &serde_json::json!({}),
            "X",
        );
    }
}));
