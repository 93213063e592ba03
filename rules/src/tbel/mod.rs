//! TBEL, ThingsBoard's default script language (a fork of MVEL), run by
//! translating it to JavaScript for the chain's QuickJS runtime.
//!
//! Why a translator and not an interpreter: a script then runs under the
//! same memory limit and deadline as a JS script (one runtime per chain,
//! [`crate::script::ScriptHost`]), at QuickJS's speed, and the helpers
//! ThingsBoard adds to TBEL are one JavaScript prelude ([`PRELUDE`]) rather
//! than a second runtime to harden.
//!
//! Invariants:
//! - Translation is total or refuses: every construct outside the subset
//!   (a Java class other than the listed ones, `new` of anything but a
//!   primitive array or `Date`, an unknown function, a variable that is
//!   never assigned, MVEL's projection and regex operators, ...) is a
//!   [`TbelError`] with the line and column in the TBEL source, at load.
//! - The generated code is strict-mode JavaScript in which every TBEL name
//!   is prefixed with `$`: a script cannot reach the runtime's globals, the
//!   prelude (`__tb`) or another script's variables, and cannot create a
//!   global by assigning an undeclared name (it is declared in its function).
//! - Semantics follow TBEL where JavaScript differs: `==` compares values
//!   (maps and lists deeply; `"123" == 123`), the value of the last
//!   statement is the result, `list.size()`/`map.put()`/`str.length()` and
//!   the other collection and string methods behave as their Java
//!   counterparts, strings iterate by character and maps by value.
//! - Known differences (documented in docs/rules.md): numbers are doubles
//!   (a `long` beyond 2^53 loses precision; bitwise operators work on 32
//!   bits); integer division yields a fraction; `toLocaleString` knows
//!   only UTC and fixed offsets.

mod lex;
mod parse;

/// The helpers every TBEL script can call, loaded once per runtime.
pub const PRELUDE: &str = include_str!("prelude.js");

/// What a script node's TBEL failed on, located in its source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {col}: {message}")]
pub struct TbelError {
    pub line: u32,
    pub col: u32,
    pub message: String,
}

impl TbelError {
    fn at(line: u32, col: u32, message: impl Into<String>) -> Self {
        Self {
            line,
            col,
            message: message.into(),
        }
    }
}

/// Translates a TBEL script body into a JavaScript function expression
/// taking `params` (for a script node: `msg`, `metadata`, `msgType`).
pub fn translate(src: &str, params: &[&str]) -> Result<String, TbelError> {
    let toks = lex::tokenize(src)?;
    parse::program(toks, params)
}

/// Functions a TBEL script may call by name (ThingsBoard's helpers).
/// Each one is a function of the prelude's `__tb.f` (a test checks).
pub const FUNCTIONS: &[&str] = &[
    "btoa",
    "atob",
    "toFixed",
    "toInt",
    "stringToBytes",
    "bytesToString",
    "decodeToString",
    "decodeToJson",
    "isBinary",
    "isOctal",
    "isDecimal",
    "isHexadecimal",
    "isNaN",
    "isMap",
    "isList",
    "isArray",
    "encodeURI",
    "decodeURI",
    "raiseError",
    "printUnsignedBytes",
    "padStart",
    "padEnd",
    "intToHex",
    "longToHex",
    "floatToHex",
    "doubleToHex",
    "intLongToRadixString",
    "parseHexToInt",
    "parseLittleEndianHexToInt",
    "parseBigEndianHexToInt",
    "parseHexToLong",
    "parseLittleEndianHexToLong",
    "parseBigEndianHexToLong",
    "parseHexToFloat",
    "parseLittleEndianHexToFloat",
    "parseBigEndianHexToFloat",
    "parseHexIntLongToFloat",
    "parseHexToDouble",
    "parseLittleEndianHexToDouble",
    "parseBigEndianHexToDouble",
    "hexToBytes",
    "hexToBytesArray",
    "bytesToHex",
    "parseBytesToInt",
    "parseBytesToLong",
    "parseBytesToFloat",
    "parseBytesIntToFloat",
    "parseBytesToDouble",
    "parseBytesLongToDouble",
    "bytesToExecutionArrayList",
    "parseByteToBinaryArray",
    "parseBytesToBinaryArray",
    "parseLongToBinaryArray",
    "parseBinaryArrayToInt",
    "parseInt",
    "parseLong",
    "parseFloat",
    "parseDouble",
    "base64ToHex",
    "bytesToBase64",
    "base64ToBytes",
    "base64ToBytesList",
    "toFlatMap",
];

/// Java classes whose static members a script may use, with those members.
pub const CLASSES: &[(&str, &[&str])] = &[
    (
        "Math",
        &[
            "abs",
            "acos",
            "asin",
            "atan",
            "atan2",
            "cbrt",
            "ceil",
            "cos",
            "cosh",
            "exp",
            "floor",
            "floorDiv",
            "floorMod",
            "hypot",
            "log",
            "log10",
            "max",
            "min",
            "pow",
            "random",
            "round",
            "signum",
            "sin",
            "sinh",
            "sqrt",
            "tan",
            "tanh",
            "toDegrees",
            "toRadians",
            "PI",
            "E",
        ],
    ),
    (
        "Integer",
        &[
            "parseInt",
            "valueOf",
            "toString",
            "toHexString",
            "toBinaryString",
            "toOctalString",
            "MAX_VALUE",
            "MIN_VALUE",
        ],
    ),
    (
        "Long",
        &[
            "parseLong",
            "valueOf",
            "toString",
            "toHexString",
            "toBinaryString",
            "toOctalString",
            "MAX_VALUE",
            "MIN_VALUE",
        ],
    ),
    (
        "Double",
        &[
            "parseDouble",
            "valueOf",
            "toString",
            "isNaN",
            "isInfinite",
            "MAX_VALUE",
            "MIN_VALUE",
        ],
    ),
    (
        "Float",
        &[
            "parseFloat",
            "valueOf",
            "toString",
            "isNaN",
            "MAX_VALUE",
            "MIN_VALUE",
        ],
    ),
    ("Boolean", &["parseBoolean", "valueOf", "toString"]),
    ("String", &["valueOf", "format", "join"]),
    ("JSON", &["stringify", "parse"]),
    ("Collections", &["reverse", "sort", "max", "min"]),
    ("Arrays", &["asList", "toString"]),
    ("Date", &["now", "parse"]),
];

#[cfg(test)]
mod tests;
