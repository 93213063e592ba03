//! RPC at the edge: ThingsBoard's send-RPC-request node writes to the
//! originator device through its driver, and the reply node has nothing to
//! answer (devices behind the gateway send no RPC requests of their own).
//!
//! Invariant: a request's message waits outside the chain while the driver
//! writes; it goes on from this node on `Success` or `Failure` when the
//! write's outcome comes back (`Engine::resume`), never before.

use outpost_core::Value;
use serde_json::Value as Json;

use crate::engine::{Cx, Node, WriteRequest};
use crate::msg::Msg;

/// `action.TbSendRPCRequestNode`: the message is an RPC `{"method",
/// "params"}`; methods `set` / `write` with params `{"tag", "value"}`, or
/// `set_<tag>` with the value as params, write the tag of the originator
/// (the same methods ThingsBoard's server-side RPC takes on the uplink).
#[derive(Debug)]
pub(super) struct SendRpcRequest;

/// The (tag, value) an RPC message asks to write.
pub(super) fn rpc_write(data: &Json) -> Result<(String, Value), String> {
    let method = data
        .get("method")
        .and_then(Json::as_str)
        .ok_or("the message has no \"method\"")?;
    let params = data.get("params").unwrap_or(&Json::Null);
    let (tag, value) = if let Some(tag) = method.strip_prefix("set_") {
        (tag, params)
    } else if matches!(method, "set" | "write") {
        (
            params.get("tag").and_then(Json::as_str).unwrap_or_default(),
            params.get("value").unwrap_or(&Json::Null),
        )
    } else {
        ("", &Json::Null)
    };
    if tag.is_empty() {
        return Err(format!(
            "unsupported RPC method {method:?} (use set, write or set_<tag>)"
        ));
    }
    let value = match value {
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Value::I64(i),
            (None, Some(u), _) => Value::U64(u),
            (None, None, Some(f)) => Value::F64(f),
            _ => return Err(format!("unsupported value {value}")),
        },
        Json::String(s) => Value::Str(s.clone()),
        other => return Err(format!("unsupported value {other}")),
    };
    Ok((tag.to_string(), value))
}

impl Node for SendRpcRequest {
    fn on_msg(&mut self, m: Msg, cx: &mut Cx<'_>) {
        let (tag, value) = match rpc_write(&m.data) {
            Ok(w) => w,
            Err(e) => return cx.fail(m, e),
        };
        let device = m.originator.clone();
        let Some(reply) = cx.reply_here(m.clone()) else {
            return cx.fail(m, "no place to wait for the reply".into());
        };
        cx.write(WriteRequest {
            device,
            tag,
            value,
            by: "rules-rpc".to_string(),
            reply: Some(reply),
        });
    }
}

/// `rpc.TbSendRPCReplyNode`: answers an RPC a device sent to the server.
/// Devices behind the gateway send none (their drivers poll them), so a
/// message reaching it has nothing to answer: `Failure`, saying so.
#[derive(Debug)]
pub(super) struct SendRpcReply;

impl Node for SendRpcReply {
    fn on_msg(&mut self, m: Msg, cx: &mut Cx<'_>) {
        cx.fail(
            m,
            "no RPC request to reply to: devices behind the gateway send none".into(),
        );
    }
}
