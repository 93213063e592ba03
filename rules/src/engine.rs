//! The engine: chains of nodes joined by labelled relations, run
//! synchronously on one message at a time.
//!
//! Invariants:
//! - Nodes are pure: they get `now` and a message and tell the engine what
//!   goes out on which relation, what to log (events) and what to write to
//!   devices. The engine does no I/O either; the daemon's rules task does.
//! - A message follows every connection of the relations it is sent on, in
//!   the order the connections were declared; a relation with no
//!   connection drops it (counted per node as "dropped").
//! - A message may take at most [`MAX_HOPS`] steps along any one path (a
//!   cycle in a chain is cut there and counted as an error), and everything
//!   one message (or one node's timer) sets off together — every copy on
//!   every branch — at most [`MAX_STEPS`] node runs: a node that sends a
//!   message back along two connections would otherwise double the work at
//!   every hop. What is left when the budget runs out is dropped, counted
//!   as an error on the node where it was cut. Nested chains at most
//!   [`MAX_DEPTH`] deep.
//! - Timers: nodes' `on_tick` runs with the same `now` discipline; what a
//!   tick emits is routed like any other output (from a nested chain's
//!   node, outputs to the chain's output nodes have no caller to return to
//!   and are dropped, counted).

use std::collections::BTreeMap;

use outpost_core::{Alarm, AlarmState, Event, Timestamp, Value};

use crate::msg::Msg;

/// A message may take at most this many steps through nodes.
pub const MAX_HOPS: usize = 256;
/// Everything one message (or one timer) sets off may run at most this many
/// nodes, over all its copies and branches.
pub const MAX_STEPS: usize = 1024;
/// Nested chains may call each other at most this deep.
pub const MAX_DEPTH: usize = 8;

/// A write a node asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteRequest {
    pub device: String,
    pub tag: String,
    pub value: Value,
    /// The node that asked (for the audit trail).
    pub by: String,
    /// Where the outcome goes on (see [`Engine::resume`]); none: the write
    /// is fire-and-forget.
    pub reply: Option<Reply>,
}

/// Where a message waits for the outcome of a write: the node that asked,
/// in the engine that asked (a reload makes a new engine, and replies to
/// the old one are dropped).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    generation: u64,
    chain: usize,
    node: usize,
    ret: Vec<(usize, usize)>,
    pub(crate) msg: Msg,
}

/// Engines made so far (each gets its own generation).
static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The node a step runs in, for replies.
#[derive(Debug, Clone)]
pub(crate) struct Here {
    generation: u64,
    chain: usize,
    node: usize,
    ret: Vec<(usize, usize)>,
}

/// What nodes can read of the gateway's state, per device: the latest
/// values and the attributes of each scope the chains or the platform
/// saved.
#[derive(Debug, Default, Clone)]
pub struct State {
    pub latest: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
    /// Client-side attributes (the device's own).
    pub attributes: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
    pub shared: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
    pub server: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
}

impl State {
    /// Takes in the values of a saved event.
    pub fn observe(&mut self, ev: &Event) {
        use outpost_core::{AttributeScope, Body};
        let (target, points) = match &ev.body {
            Body::Telemetry(p) => (&mut self.latest, p),
            Body::Attributes(p) => (&mut self.attributes, p),
            Body::ScopedAttributes(AttributeScope::Shared, p) => (&mut self.shared, p),
            Body::ScopedAttributes(AttributeScope::Server, p) => (&mut self.server, p),
            _ => return,
        };
        if let serde_json::Value::Object(m) = crate::msg::points_json(points) {
            target.entry(ev.device.clone()).or_default().extend(m);
        }
    }
}

/// What the engine remembers across a reload of its chains and, through
/// the log's current state, across a restart: values, attributes and open
/// alarms.
#[derive(Debug, Default, Clone)]
pub struct Memory {
    pub state: State,
    /// Open (not cleared) alarms: "originator\0type" → the alarm.
    pub alarms: BTreeMap<String, Alarm>,
}

impl Memory {
    /// The memory the log's current state describes (see
    /// `EventLog::current`): attributes, and alarms not cleared.
    pub fn restore<'e>(events: impl IntoIterator<Item = &'e Event>) -> Self {
        let mut m = Memory::default();
        for ev in events {
            m.observe(ev);
        }
        m
    }

    pub fn observe(&mut self, ev: &Event) {
        if let outpost_core::Body::Alarm(a) = &ev.body {
            let key = alarm_key(&ev.device, &a.name);
            if a.state == AlarmState::Active {
                self.alarms.insert(key, a.clone());
            } else {
                self.alarms.remove(&key);
            }
        } else {
            self.state.observe(ev);
        }
    }
}

/// The key of an alarm's identity: originator and type.
pub fn alarm_key(originator: &str, alarm_type: &str) -> String {
    format!("{originator}\u{0}{alarm_type}")
}

/// A node's view of one step.
#[derive(Debug)]
pub struct Cx<'a> {
    pub now: Timestamp,
    pub state: &'a State,
    /// Open alarms: "originator\0type" → the alarm.
    pub(crate) alarms: &'a mut BTreeMap<String, Alarm>,
    pub(crate) routed: Vec<(String, Msg)>,
    pub(crate) events: &'a mut Vec<Event>,
    pub(crate) writes: &'a mut Vec<WriteRequest>,
    /// Set by a node that failed on this message (counted).
    pub(crate) error: Option<String>,
    /// Script time spent in this step, ns.
    pub(crate) script_ns: u64,
    pub(crate) here: Option<Here>,
}

impl<'a> Cx<'a> {
    pub(crate) fn new(
        now: Timestamp,
        state: &'a State,
        alarms: &'a mut BTreeMap<String, Alarm>,
        events: &'a mut Vec<Event>,
        writes: &'a mut Vec<WriteRequest>,
    ) -> Self {
        Self {
            now,
            state,
            alarms,
            routed: Vec::new(),
            events,
            writes,
            error: None,
            script_ns: 0,
            here: None,
        }
    }

    /// A reply slot for `msg` at the node of this step: the outcome of a
    /// write carrying it comes back to this node's relations.
    pub fn reply_here(&self, msg: Msg) -> Option<Reply> {
        self.here.as_ref().map(|h| Reply {
            generation: h.generation,
            chain: h.chain,
            node: h.node,
            ret: h.ret.clone(),
            msg,
        })
    }

    /// Sends `msg` on the relation `rel` (e.g. "Success", "True").
    pub fn tell(&mut self, rel: &str, msg: Msg) {
        self.routed.push((rel.to_string(), msg));
    }

    /// Sends `msg` on `Failure`, recording why.
    pub fn fail(&mut self, msg: Msg, why: String) {
        self.error = Some(why);
        self.routed.push(("Failure".to_string(), msg));
    }

    /// Hands an event to the log (and so to the uplinks).
    pub fn emit(&mut self, ev: Event) {
        self.events.push(ev);
    }

    /// Asks for a write to a device.
    pub fn write(&mut self, w: WriteRequest) {
        self.writes.push(w);
    }

    pub fn add_script_time(&mut self, ns: u64) {
        self.script_ns += ns;
    }

    /// The open alarm of this identity (see [`alarm_key`]).
    pub fn alarm(&self, key: &str) -> Option<&Alarm> {
        self.alarms.get(key)
    }

    /// Records an alarm's new state: open, or (cleared) closed.
    pub fn set_alarm(&mut self, key: String, alarm: Option<Alarm>) {
        match alarm {
            Some(a) => {
                self.alarms.insert(key, a);
            }
            None => {
                self.alarms.remove(&key);
            }
        }
    }
}

/// One node type's behaviour.
pub trait Node: Send + std::fmt::Debug {
    fn on_msg(&mut self, msg: Msg, cx: &mut Cx<'_>);
    /// Timers: windows closing, heartbeats, delayed messages.
    fn on_tick(&mut self, _cx: &mut Cx<'_>) {}
    /// Whether this node only stands in for an unsupported one.
    fn passes_through(&self) -> bool {
        false
    }
    /// Shared attribute keys this node reads (the gateway asks ThingsBoard
    /// for them when a device connects).
    fn shared_keys(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Counters of one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeCounters {
    pub messages_in: u64,
    pub out: BTreeMap<String, u64>,
    pub dropped: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    pub script_ns: u64,
}

#[derive(Debug)]
pub(crate) enum Kind {
    Normal(Box<dyn Node>),
    /// Runs another chain (by index) from its first node.
    Call(usize),
    /// Returns to the calling chain, on a relation named after this node.
    Return,
}

#[derive(Debug)]
pub(crate) struct Slot {
    pub name: String,
    pub type_name: String,
    pub kind: Kind,
    /// relation → target nodes, in declaration order.
    pub out: Vec<(String, usize)>,
    pub counters: NodeCounters,
}

#[derive(Debug)]
pub struct Chain {
    pub name: String,
    pub(crate) first: Option<usize>,
    pub(crate) nodes: Vec<Slot>,
}

impl Chain {
    /// (node name, node type, counters), in node order.
    pub fn counters(&self) -> Vec<(&str, &str, &NodeCounters)> {
        self.nodes
            .iter()
            .map(|n| (n.name.as_str(), n.type_name.as_str(), &n.counters))
            .collect()
    }
}

/// Loaded chains; the first is the root.
#[derive(Debug, Default)]
pub struct Engine {
    pub chains: Vec<Chain>,
    pub state: State,
    pub alarms: BTreeMap<String, Alarm>,
    /// Set at the first step that may ask for a reply.
    generation: u64,
}

struct Work {
    chain: usize,
    node: usize,
    msg: Msg,
    /// Call stack: (chain, calling node).
    ret: Vec<(usize, usize)>,
    hops: usize,
    /// Which message or timer set this off (an index into the run's budgets).
    root: usize,
}

/// Where what a node sends goes on from: its call stack, the steps taken so
/// far, and the budget it draws on.
#[derive(Clone, Copy)]
struct Path<'a> {
    ret: &'a [(usize, usize)],
    hops: usize,
    root: usize,
}

impl Path<'_> {
    fn start(root: usize) -> Self {
        Path {
            ret: &[],
            hops: 0,
            root,
        }
    }
}

impl Engine {
    /// Runs `msg` through the root chain; pushes events to log and writes.
    pub fn process(
        &mut self,
        now: Timestamp,
        msg: Msg,
        events: &mut Vec<Event>,
        writes: &mut Vec<WriteRequest>,
    ) {
        let Some(first) = self.chains.first().and_then(|c| c.first) else {
            return;
        };
        let saved_from = events.len();
        let mut queue = vec![Work {
            chain: 0,
            node: first,
            msg,
            ret: Vec::new(),
            hops: 0,
            root: 0,
        }];
        self.run(now, &mut queue, events, writes);
        self.observe(&events[saved_from..]);
    }

    /// Runs every node's timer.
    pub fn tick(
        &mut self,
        now: Timestamp,
        events: &mut Vec<Event>,
        writes: &mut Vec<WriteRequest>,
    ) {
        let mut queue = Vec::new();
        for c in 0..self.chains.len() {
            for n in 0..self.chains[c].nodes.len() {
                let routed = {
                    let Engine {
                        chains,
                        state,
                        alarms,
                        ..
                    } = self;
                    let slot = &mut chains[c].nodes[n];
                    let Kind::Normal(node) = &mut slot.kind else {
                        continue;
                    };
                    let mut cx = Cx::new(now, state, alarms, events, writes);
                    node.on_tick(&mut cx);
                    note_error(&mut slot.counters, cx.error.take());
                    cx.routed
                };
                let root = queue.len();
                self.route(c, n, routed, Path::start(0), &mut queue);
                // Every timer's output is one root with its own budget.
                for w in &mut queue[root..] {
                    w.root = root;
                }
            }
        }
        let saved_from = events.len();
        self.run(now, &mut queue, events, writes);
        self.observe(&events[saved_from..]);
    }

    /// Latest values and attributes are what the chains saved (as in
    /// ThingsBoard, where an enrichment node reads stored values, never
    /// the message in flight).
    fn observe(&mut self, saved: &[Event]) {
        for ev in saved {
            self.state.observe(ev);
        }
    }

    /// The outcome of a write a node asked for with a reply: the node's
    /// message goes on from it, on `Success` (data `{"success": true}`) or
    /// `Failure` (`metadata.error`). A reply to another engine (the chains
    /// were reloaded meanwhile) is dropped.
    pub fn resume(
        &mut self,
        now: Timestamp,
        reply: Reply,
        outcome: Result<(), String>,
        events: &mut Vec<Event>,
        writes: &mut Vec<WriteRequest>,
    ) {
        if reply.generation != self.generation {
            return;
        }
        let mut msg = reply.msg;
        let routed = match outcome {
            Ok(()) => {
                msg.data = serde_json::json!({"success": true});
                vec![("Success".to_string(), msg)]
            }
            Err(e) => {
                msg.metadata.insert("error".into(), e.clone());
                if let Some(slot) = self
                    .chains
                    .get_mut(reply.chain)
                    .and_then(|c| c.nodes.get_mut(reply.node))
                {
                    note_error(&mut slot.counters, Some(e));
                }
                vec![("Failure".to_string(), msg)]
            }
        };
        let mut queue = Vec::new();
        let path = Path {
            ret: &reply.ret,
            hops: 1,
            root: 0,
        };
        self.route(reply.chain, reply.node, routed, path, &mut queue);
        let saved_from = events.len();
        self.run(now, &mut queue, events, writes);
        self.observe(&events[saved_from..]);
    }

    /// Takes in an event that is saved whatever the chains do (attributes
    /// of the shared and server scopes).
    pub fn observe_saved(&mut self, ev: &Event) {
        self.state.observe(ev);
    }

    /// Every shared attribute key the chains read.
    pub fn shared_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .chains
            .iter()
            .flat_map(|c| c.nodes.iter())
            .filter_map(|n| match &n.kind {
                Kind::Normal(node) => Some(node.shared_keys()),
                _ => None,
            })
            .flatten()
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// What the engine remembers, for the engine that replaces it.
    pub fn take_memory(&mut self) -> Memory {
        Memory {
            state: std::mem::take(&mut self.state),
            alarms: std::mem::take(&mut self.alarms),
        }
    }

    pub fn put_memory(&mut self, m: Memory) {
        self.state = m.state;
        self.alarms = m.alarms;
    }

    /// Acknowledges an alarm (open, or cleared but not yet acknowledged
    /// when `closed` holds it): the event recording it, or `None` when
    /// there is no such alarm or it is already acknowledged.
    pub fn acknowledge(
        &mut self,
        now: Timestamp,
        originator: &str,
        alarm_type: &str,
        closed: Option<Alarm>,
    ) -> Option<Event> {
        let key = alarm_key(originator, alarm_type);
        let mut a = match self.alarms.get(&key) {
            Some(a) => a.clone(),
            None => closed.filter(|c| c.name == alarm_type)?,
        };
        if a.acknowledged {
            return None;
        }
        a.acknowledged = true;
        a.ack_ms = Some(now.unix_ms);
        if a.state == AlarmState::Active {
            self.alarms.insert(key, a.clone());
        }
        Some(Event::new(originator, now, outpost_core::Body::Alarm(a)))
    }

    /// Clears an open alarm from outside the chains (the technician's
    /// page): the event recording it, or `None` when it is not open.
    pub fn clear(&mut self, now: Timestamp, originator: &str, alarm_type: &str) -> Option<Event> {
        let mut a = self.alarms.remove(&alarm_key(originator, alarm_type))?;
        a.state = AlarmState::Cleared;
        a.clear_ms = Some(now.unix_ms);
        Some(Event::new(originator, now, outpost_core::Body::Alarm(a)))
    }

    fn run(
        &mut self,
        now: Timestamp,
        queue: &mut Vec<Work>,
        events: &mut Vec<Event>,
        writes: &mut Vec<WriteRequest>,
    ) {
        // Depth first, in declaration order: the queue is a stack, and
        // routes are pushed in reverse. Budgets are indexed by `root`, which
        // is below the initial queue's length.
        let mut spent = vec![0usize; queue.len()];
        while let Some(w) = queue.pop() {
            let Some(budget) = spent.get_mut(w.root) else {
                continue;
            };
            *budget += 1;
            let over = *budget > MAX_STEPS;
            if self.generation == 0 {
                self.generation = GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let generation = self.generation;
            let Engine {
                chains,
                state,
                alarms,
                ..
            } = self;
            // A call's target entry, looked up before the slot is borrowed.
            let call_first = match chains
                .get(w.chain)
                .and_then(|c| c.nodes.get(w.node))
                .map(|s| &s.kind)
            {
                Some(Kind::Call(t)) => chains.get(*t).and_then(|c| c.first),
                _ => None,
            };
            let Some(slot) = chains
                .get_mut(w.chain)
                .and_then(|c| c.nodes.get_mut(w.node))
            else {
                continue;
            };
            slot.counters.messages_in += 1;
            if over {
                // Said once, where the budget ran out; the rest is counted.
                if *budget == MAX_STEPS + 1 {
                    note_error(
                        &mut slot.counters,
                        Some(format!(
                            "message cut off after {MAX_STEPS} node runs (its copies loop?)"
                        )),
                    );
                } else {
                    slot.counters.dropped += 1;
                }
                continue;
            }
            if w.hops >= MAX_HOPS {
                note_error(
                    &mut slot.counters,
                    Some(format!("message dropped after {MAX_HOPS} steps (a cycle?)")),
                );
                continue;
            }
            match &mut slot.kind {
                Kind::Normal(node) => {
                    let mut cx = Cx::new(now, state, alarms, events, writes);
                    cx.here = Some(Here {
                        generation,
                        chain: w.chain,
                        node: w.node,
                        ret: w.ret.clone(),
                    });
                    node.on_msg(w.msg, &mut cx);
                    slot.counters.script_ns += cx.script_ns;
                    note_error(&mut slot.counters, cx.error.take());
                    let routed = cx.routed;
                    let path = Path {
                        ret: &w.ret,
                        hops: w.hops + 1,
                        root: w.root,
                    };
                    self.route(w.chain, w.node, routed, path, queue);
                }
                Kind::Call(target) => {
                    let target = *target;
                    match call_first {
                        Some(first) if w.ret.len() < MAX_DEPTH => {
                            let mut ret = w.ret.clone();
                            ret.push((w.chain, w.node));
                            queue.push(Work {
                                chain: target,
                                node: first,
                                msg: w.msg,
                                ret,
                                hops: w.hops + 1,
                                root: w.root,
                            });
                        }
                        _ => note_error(
                            &mut slot.counters,
                            Some(format!("nested chains deeper than {MAX_DEPTH} or empty")),
                        ),
                    }
                }
                Kind::Return => {
                    let rel = slot.name.clone();
                    let mut ret = w.ret.clone();
                    match ret.pop() {
                        Some((c, n)) => {
                            let path = Path {
                                ret: &ret,
                                hops: w.hops + 1,
                                root: w.root,
                            };
                            self.route(c, n, vec![(rel, w.msg)], path, queue);
                        }
                        None => slot.counters.dropped += 1,
                    }
                }
            }
        }
    }

    /// Queues what node `n` of chain `c` sent, following its connections.
    fn route(
        &mut self,
        c: usize,
        n: usize,
        routed: Vec<(String, Msg)>,
        path: Path<'_>,
        queue: &mut Vec<Work>,
    ) {
        let Some(slot) = self.chains.get_mut(c).and_then(|ch| ch.nodes.get_mut(n)) else {
            return;
        };
        let mut next = Vec::new();
        for (rel, msg) in routed {
            match slot.counters.out.get_mut(&rel) {
                Some(n) => *n += 1,
                None => {
                    slot.counters.out.insert(rel.clone(), 1);
                }
            }
            // The last target takes the message, the others a copy.
            let mut left = slot.out.iter().filter(|(r, _)| *r == rel).count();
            if left == 0 {
                slot.counters.dropped += 1;
                continue;
            }
            let mut msg = Some(msg);
            for (_, t) in slot.out.iter().filter(|(r, _)| *r == rel) {
                left -= 1;
                let m = if left == 0 { msg.take() } else { msg.clone() };
                if let Some(m) = m {
                    next.push(Work {
                        chain: c,
                        node: *t,
                        msg: m,
                        ret: path.ret.to_vec(),
                        hops: path.hops,
                        root: path.root,
                    });
                }
            }
        }
        queue.extend(next.into_iter().rev());
    }
}

fn note_error(c: &mut NodeCounters, e: Option<String>) {
    if let Some(e) = e {
        c.errors += 1;
        c.last_error = Some(e);
    }
}
