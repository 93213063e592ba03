//! Golden tests: the examples of ThingsBoard's TBEL documentation (language
//! guide and helper functions), each with its documented result, run through
//! the translator and QuickJS; and the refusals, each with its position.

use std::time::Duration;

use serde_json::{json, Value as Json};

use crate::script::ScriptHost;

fn host() -> ScriptHost {
    ScriptHost::new(8 << 20, Duration::from_millis(500)).unwrap()
}

fn run_with(h: &ScriptHost, src: &str, msg: Json) -> Result<Json, String> {
    let s = h.compile_tbel(src)?;
    h.call(
        &s,
        &msg,
        &json!({"deviceName": "boiler-1", "deviceType": "default"}),
        "POST_TELEMETRY_REQUEST",
    )
    .map_err(|e| e.to_string())
}

/// Each `(script, documented result)` pair.
fn golden(cases: &[(&str, Json)]) {
    let h = host();
    let mut failed = Vec::new();
    for (src, want) in cases {
        match run_with(&h, src, json!({"temperature": 21.5, "humidity": 40})) {
            Ok(got) if same(&got, want) => {}
            Ok(got) => failed.push(format!("{src}\n  want {want}\n  got  {got}")),
            Err(e) => failed.push(format!("{src}\n  want {want}\n  error {e}")),
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} failed:\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n")
    );
}

/// Equal, with numbers compared as doubles to float32 precision (the
/// documentation prints floats as Java does: `29.29824f`, `10.0`).
fn same(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            x == y || (x - y).abs() <= 1e-6 * x.abs().max(y.abs())
        }
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn refused(src: &str) -> String {
    let e = crate::tbel::translate(src, &["msg", "metadata", "msgType"]).unwrap_err();
    e.to_string()
}

#[test]
fn language_guide_expressions_and_statements() {
    golden(&[
        ("msg.temperature", json!(21.5)),
        ("return msg.temperature > 10;", json!(true)),
        (
            "return (msg.temperature > 10 && msg.temperature < 20) || (msg.humidity > 10 && msg.humidity < 60);",
            json!(true),
        ),
        ("var a = 2;\nvar b = 2;\nreturn a + b", json!(4)),
        ("var a = 2; var b = 3; a + b", json!(5)),
        ("\"123\" == 123", json!(true)),
        ("var temperature = -1; if (temperature > 0) { return \"Greater than zero!\"; } else if (temperature == -1) { return \"Minus one!\"; } else { return \"Something else!\"; }", json!("Minus one!")),
        ("var temperature = 5; temperature > 0 ? \"Yes\" : \"No\";", json!("Yes")),
        ("var t = 5; (t > 10 ? \"hot\" : (t > 0 ? \"mild\" : \"cold\"))", json!("mild")),
        ("var numbers = [1, 2, 3]; var sum = 0; foreach (n : numbers) { sum+=n; } return sum;", json!(6)),
        ("var str = \"ABC\"; var out = \"\"; foreach (c : str) { out = c + out; } return out;", json!("CBA")),
        ("var sum = 0; for (var i =0; i < 100; i++) { sum += i; } return sum;", json!(4950)),
        ("var x = 0; do { x = x + 1; } while (x < 5); return x;", json!(5)),
        ("var x = 0; do { x = x + 1; } until (x == 5); return x;", json!(5)),
        ("var x = 0; while (x < 3) { x++; } return x;", json!(3)),
        ("var x = 0; until (x == 4) { x++; } return x;", json!(4)),
        ("var array = new int[3]; array[0] = 1; array[1] = 2; array[2] = 3;\nfunction sum(list){ var result = 0; for(var i = 0; i < list.length; i++){ result += list[i]; } return result; };\nvar sum = sum(array); return sum;", json!(6)),
        ("var str = \"My String\"; return str[0];", json!("M")),
        ("return [5.toString(), 1.5.intValue()];", json!(["5", 1])),
        ("var s = \"/*VARS0*/ a * b\"; function f() { var t = \"/*VARS1*/\"; t } return s + f();", json!("/*VARS0*/ a * b/*VARS1*/")),
        ("return [0353, 0xAFF0, 125, 10.503, 94.92d, 14.5f];", json!([235, 45040, 125, 10.503, 94.92, 14.5])),
        ("return 'This is also string literal';", json!("This is also string literal")),
        ("return nil == null;", json!(true)),
        ("var foo = Math.sqrt(4); return foo;", json!(2.0)),
        ("var list = [\"A\", \"B\", \"C\"]; java.util.Collections.reverse(list); return list;", json!(["C", "B", "A"])),
        ("return [Integer.toString(0x1A, 16), Integer.toString(0x1A, 10), Integer.toString(0x1A, 8), Integer.toString(0x1A, 2)];", json!(["1a", "26", "32", "11010"])),
        ("return [Integer.toString(-255, 16), Integer.toString(-255, 8), Integer.toString(-255, 2)];", json!(["-ff", "-377", "-11111111"])),
        ("var f0 = 7823764.8374; return f0.toString();", json!("7823764.8374")),
        ("var metadataStr = JSON.stringify(metadata); var md = JSON.parse(metadataStr); return md.deviceName;", json!("boiler-1")),
        ("x = 5; y = x * 2; return y;", json!(10)),
        ("int a = 3; String s = 'n' + a; return s;", json!("n3")),
        ("var l = [1,2]; for (Integer v : l) { l2 = v; } return l2;", json!(2)),
        ("return {msg: msg, metadata: metadata, msgType: msgType}.msgType;", json!("POST_TELEMETRY_REQUEST")),
        ("var v = {1, 2, 3}; return v;", json!([1, 2, 3])),
    ]);
}

#[test]
fn maps_as_documented() {
    golden(&[
        ("var map = {\"temperature\": 42, \"nested\" : \"508\"}; return [map.temperature, map.get(\"temperature\"), map[\"temperature\"]];", json!([42, 42, 42])),
        ("var map = {\"a\": 1}; if (map.?nonExistingKey.smth > 10) { return 1; } return map.?nonExistingKey.smth;", json!(null)),
        ("var map = {\"temperature\": 42, \"nested\" : \"508\"}; var ks = []; var vs = []; foreach(element : map.entrySet()){ ks.add(element.getKey()); vs.add(element.value); } return [ks, vs];", json!([["temperature", "nested"], [42, "508"]])),
        ("var map = {\"temperature\": 42, \"nested\" : \"508\"}; var vs = []; foreach (Object value : map) { vs.add(value); } return vs;", json!([42, "508"])),
        ("var map = {\"temperature\": 42, \"nested\" : \"508\"}; map.temperature = 0; return [map.temperature != null, map.size()];", json!([true, 2])),
        (
            "var map = {\"temperature\": 0, \"nested\" : \"508\"};\
             map.humidity = 73; map.put(\"humidity\", 73); map.putIfAbsent(\"temperature1\", 73);\
             map.temperature = 73;\
             var put1 = map.put(\"temperature\", 73);\
             var putIfAbsent1 = map.putIfAbsent(\"temperature\", 73);\
             var replace = map.replace(\"temperature\", 56);\
             var replace1 = map.replace(\"temperature\", 56, 42);\
             var replace3 = map.replace(\"temperature\", 48, 56);\
             map.remove(\"temperature\");\
             return [put1, putIfAbsent1, replace, replace1, replace3, map.keys(), map.values(), map];",
            json!([73, 73, 73, true, false, ["nested", "humidity", "temperature1"], ["508", 73, 73],
                   {"nested": "508", "humidity": 73, "temperature1": 73}]),
        ),
        ("var map = {\"nested\": \"508\", \"humidity\": 73, \"temperature1\": 73}; map.sortByKey(); var a = map.keys(); map.sortByValue(); return [a, map.keys()];",
         json!([["humidity", "nested", "temperature1"], ["humidity", "temperature1", "nested"]])),
        ("var map = {\"a\": 1}; var mapAdd = {\"test\": 12, \"input\" : {\"http\": 130}}; map.putAll(mapAdd); return map;", json!({"a": 1, "test": 12, "input": {"http": 130}})),
        ("var m = {}; return [m.isEmpty(), m.size, {\"k\": 1}.containsKey(\"k\")];", json!([true, 0, true])),
    ]);
    let h = host();
    let e = run_with(&h, "var original = {}; original.humidity = 73; var unmodifiable = original.toUnmodifiable(); unmodifiable.put(\"temperature1\", 96); return unmodifiable;", json!({})).unwrap_err();
    assert!(e.contains("Map is unmodifiable"), "{e}");
}

#[test]
fn lists_as_documented() {
    golden(&[
        ("var list = [\"A\", \"B\", \"C\"]; return [list[0], list.size(), list.size];", json!(["A", 3, 3])),
        (
            "var list = [\"A\", \"B\", \"C\", \"B\", \"C\", \"hello\", 34567];\
             var listAdd = [\"thigsboard\", 4, 67];\
             var addAll = list.addAll(listAdd);\
             var addAllI = list.addAll(2, listAdd);\
             list.add(3, \"thigsboard\");\
             var push = list.push(\"thigsboard\");\
             list.unshift(\"r\");\
             return [addAll, addAllI, push, list];",
            json!([true, true, true, ["r", "A", "B", "thigsboard", "thigsboard", 4, 67, "C", "B", "C", "hello", 34567, "thigsboard", 4, 67, "thigsboard"]]),
        ),
        (
            "var list = [[\"Q\", 4], \"r\", \"A\", \"B\", \"C\", \"hello\"];\
             var removeIndex2 = list.remove(2);\
             var removeValueC = list.remove(\"C\");\
             var shift = list.shift();\
             var pop = list.pop();\
             return [removeIndex2, removeValueC, shift, pop, list];",
            json!(["A", true, ["Q", 4], "hello", ["r", "B"]]),
        ),
        (
            "var list = [\"r\", \"B\", \"thigsboard\", \"thigsboard\", 4, 67, \"B\", \"C\", \"hello\", 34567, \"thigsboard\", 4, 67];\
             var splice3 = list.splice(3);\
             var splice2 = list.splice(2, 2);\
             var splice1_4 = list.splice(1, 4, \"start\", 5, \"end\");\
             return [splice3.size(), splice2, splice1_4, list];",
            json!([10, ["thigsboard"], ["B"], ["r", "start", 5, "end"]]),
        ),
        (
            "var list = [\"r\", \"start\", 5, \"end\"];\
             var set = list.set(3, \"65\"); list[1] = \"98\"; list[0] = 2096;\
             list.sort(); var asc = list.toString();\
             list.sort(false); var desc = list.slice();\
             list.reverse();\
             return [set, asc, desc, list];",
            json!(["end", "[5, 65, 98, 2096]", [2096, "98", "65", 5], [5, "65", "98", 2096]]),
        ),
        (
            "var list = [5, \"65\", \"98\", 2096];\
             var fill = list.fill(67); var fill4 = list.fill(4, 1); var fill4_6 = list.fill(2, 1, 4);\
             return list;",
            json!([67, 2, 2, 2]),
        ),
        (
            "var list = [67, 2, 2, 2]; var listAdd = [\"thigsboard\", 4, 67];\
             return [list.toSorted(), list.toSorted(false), list.toReversed(), list.slice(), list.slice(3), list.slice(0,2),\
                     list.with(1, 69), list.concat(listAdd), list.join(), list.toSpliced(1, 0, \"Feb\"), list.toSpliced(0, 2),\
                     list.toSpliced(2, 2), list.toSpliced(2, 4, \"start\", 5, \"end\"), list.length(), list.indexOf(\"B\", 1),\
                     list.indexOf(2, 2), list.validateClazzInArrayIsOnlyNumber(), list];",
            json!([[2, 2, 2, 67], [67, 2, 2, 2], [2, 2, 2, 67], [67, 2, 2, 2], [2], [67, 2], [67, 69, 2, 2],
                   [67, 2, 2, 2, "thigsboard", 4, 67], "67,2,2,2", [67, "Feb", 2, 2, 2], [2, 2], [67, 2],
                   [67, 2, "start", 5, "end"], 4, -1, 2, true, [67, 2, 2, 2]]),
        ),
        ("var l = []; foreach (item : l) { return 1; } return l.isEmpty();", json!(true)),
    ]);
    let h = host();
    let e = run_with(&h, "var original = []; original.add(0x67); var unmodifiable = original.toUnmodifiable(); unmodifiable.add(0x35); return unmodifiable;", json!({})).unwrap_err();
    assert!(e.contains("List is unmodifiable"), "{e}");
    let e = run_with(&h, "var array = new int[3]; array[0] = 1; array[1] = 2; array[2] = 3; array[3] = 4; return array;", json!({})).unwrap_err();
    assert!(e.contains("script error"), "{e}");
}

#[test]
fn helper_functions_as_documented() {
    golden(&[
        ("var encodedData = btoa(\"Hello, world\"); var decodedData = atob(encodedData); return [encodedData, decodedData];", json!(["SGVsbG8sIHdvcmxk", "Hello, world"])),
        ("return [toFixed(0.345, 1), toFixed(0.345, 2)];", json!([0.3, 0.35])),
        ("var bytesStr = atob(\"eyJoZWxsbyI6ICJ3b3JsZCJ9\"); return stringToBytes(bytesStr);", json!([123, 34, 104, 101, 108, 108, 111, 34, 58, 32, 34, 119, 111, 114, 108, 100, 34, 125])),
        ("var inputStr = \"hello world\"; return [stringToBytes(inputStr), stringToBytes(inputStr, \"UTF8\")];", json!([[104, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100], [104, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100]])),
        ("var dataMap = {}; dataMap.inputStr = \"hello world\"; var dataJson = JSON.parse(JSON.stringify(dataMap)); return stringToBytes(dataJson.inputStr);", json!([104, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100])),
        ("var bytes = [0x48,0x45,0x4C,0x4C,0x4F]; return bytesToString(bytes);", json!("HELLO")),
        ("var bytes = stringToBytes(atob(\"eyJoZWxsbyI6ICJ3b3JsZCJ9\")); return decodeToJson(bytes);", json!({"hello": "world"})),
        ("return [isBinary(\"1100110\"), isBinary(\"2100110\"), isOctal(\"4567734\"), isOctal(\"8100110\"), isDecimal(\"4567039\"), isDecimal(\"C100110\"), isHexadecimal(\"F5D7039\"), isHexadecimal(\"K100110\")];", json!([2, -1, 8, -1, 10, -1, 16, -1])),
        ("return encodeURI(\"-_.!~*'();/?:@&=+$,#ht://example.ж д a/path with spaces/?param1=Київ 1&param2=Україна2\");", json!("-_.!~*'();/?:@&=+$,#ht://example.%D0%B6%20%D0%B4%20a/path%20with%20spaces/?param1=%D0%9A%D0%B8%D1%97%D0%B2%201&param2=%D0%A3%D0%BA%D1%80%D0%B0%D1%97%D0%BD%D0%B02")),
        ("return decodeURI(\"-_.!~*'();/?:@&=+$,#ht://example.%D0%B6%20%D0%B4%20a/path%20with%20spaces/?param1=%D0%9A%D0%B8%D1%97%D0%B2%201&param2=%D0%A3%D0%BA%D1%80%D0%B0%D1%97%D0%BD%D0%B02\");", json!("-_.!~*'();/?:@&=+$,#ht://example.ж д a/path with spaces/?param1=Київ 1&param2=Україна2")),
        ("return [printUnsignedBytes(hexToBytes(\"D8FF\")), printUnsignedBytes(hexToBytes(\"FFD8\"))];", json!([[216, 255], [255, 216]])),
        ("var str = \"010011\"; var s2 = \"1001010011\"; var fullNumber = \"203439900FFCD5581\"; return [padStart(str, 8, '0'), padStart(s2, 8, '0'), padStart(s2, 16, '*'), padStart(fullNumber.substring(11), fullNumber.length(), '*'), padEnd(str, 8, '0'), padEnd(s2, 16, '*'), padEnd(fullNumber.substring(0, 11), fullNumber.length(), '*')];",
         json!(["00010011", "1001010011", "******1001010011", "***********CD5581", "01001100", "1001010011******", "203439900FF******"])),
        ("var i = 0x7FFFFFFF; return [intToHex(i, true, true), intToHex(171, true, false), intToHex(0xABCDEF, false, true, 4), intToHex(0xABCD, false, false, 2), longToHex(0x7A12BCD3, true, true, 4), longToHex(0x7A12BCD3, false, false, 4)];",
         json!(["0x7FFFFFFF", "AB", "0xCDAB", "AB", "0xBCD3", "127A"])),
        ("return [floatToHex(123456789.00), floatToHex(123456789.00, false), doubleToHex(1729.1729d), doubleToHex(1729.1729d, false)];", json!(["0x4CEB79A3", "0xA379EB4C", "0x409B04B10CB295EA", "0xEA95B20CB1049B40"])),
        ("return [intLongToRadixString(58, 2), intLongToRadixString(13158, 8), intLongToRadixString(-13158, 8), intLongToRadixString(-13158, 10), intLongToRadixString(13158, 16), intLongToRadixString(-13158, 16), intLongToRadixString(-13158, 16, true, true)];",
         json!(["00111010", "31546", "1777777777777777746232", "-13158", "3366", "FFCC9A", "0xFFCC9A"])),
        ("return [parseHexToInt(\"BBAA\"), parseHexToInt(\"BBAA\", true), parseHexToInt(\"AABB\", false), parseHexToInt(\"BBAA\", false), parseLittleEndianHexToInt(\"AABB\"), parseBigEndianHexToInt(\"BBAA\")];", json!([48042, 48042, 48042, 43707, 48042, 48042])),
        ("return [parseHexToFloat(\"41EA62CC\"), parseHexToFloat(\"41EA62CC\", true), parseHexToFloat(\"41EA62CC\", false), parseHexToFloat(\"CC62EA41\", false)];", json!([29.29824, 29.29824, -5.948442E7, 29.29824])),
        ("return [parseHexIntLongToFloat(\"0x0A\", true), parseHexIntLongToFloat(\"0x0A\", false), parseHexIntLongToFloat(\"0x00000A\", true), parseHexIntLongToFloat(\"0x0A0000\", false), parseHexIntLongToFloat(\"0x000A0A\", true), parseHexIntLongToFloat(\"0x0A0A00\", false)];", json!([10.0, 10.0, 10.0, 10.0, 2570.0, 2570.0])),
        ("return [parseHexToDouble(\"409B04B10CB295EA\"), parseHexToDouble(\"409B04B10CB295EA\", false), parseHexToDouble(\"409B04B10CB295EA\", true), parseHexToDouble(\"EA95B20CB1049B40\", false)];", json!([1729.1729, -2.7208640774822924E205, 1729.1729, 1729.1729])),
        ("return hexToBytes(\"0x01752B0367FA000500010488FFFFFFFFFFFFFFFF33\");", json!([1, 117, 43, 3, 103, -6, 0, 5, 0, 1, 4, -120, -1, -1, -1, -1, -1, -1, -1, -1, 51])),
        ("return hexToBytesArray(\"AABBCCDDEE\");", json!([-86, -69, -52, -35, -18])),
        ("return [bytesToHex([0xBB, 0xAA]), bytesToHex([-69, 83])];", json!(["BBAA", "BB53"])),
        ("var bytes = [0xAA, 0xBB, 0xCC, 0xDD]; return [parseBytesToInt(bytes, 0, 3), parseBytesToInt(bytes, 0, 3, true), parseBytesToInt(bytes, 0, 3, false)];", json!([11189196, 11189196, 13417386])),
        ("var floatValByte = [0x41, 0xEA, 0x62, 0xCC]; var floatValList = [65, -22, 98, -52]; return [parseBytesToFloat([0x0A]), parseBytesToFloat(floatValByte, 0), parseBytesToFloat(floatValByte, 0, 2, false), parseBytesToFloat(floatValByte, 0, 2, true), parseBytesToFloat(floatValByte, 0, 3, false), parseBytesToFloat(floatValByte, 0, 3, true), parseBytesToFloat(floatValByte, 0, 4, false), parseBytesToFloat(floatValList, 0), parseBytesToFloat(floatValList, 0, 4, false)];",
         json!([1.4E-44, 29.29824, 8.4034E-41, 2.3646E-41, 9.083913E-39, 6.053388E-39, -5.948442E7, 29.29824, -5.948442E7])),
        ("var intValByte = [0x00, 0x00, 0x00, 0x0A]; return [parseBytesIntToFloat(intValByte, 3, 1, true), parseBytesIntToFloat(intValByte, 3, 1, false), parseBytesIntToFloat(intValByte, 2, 2, true), parseBytesIntToFloat(intValByte, 2, 2, false), parseBytesIntToFloat(intValByte, 0, 4, true), parseBytesIntToFloat(intValByte, 0, 4, false)];",
         json!([10.0, 10.0, 10.0, 2560.0, 10.0, 1.6777216E8])),
        ("var byteAT101 = hexToBytes(\"0x01756403671B01048836BF7701F000090722050000\"); var offset = 9; return [parseBytesIntToFloat(byteAT101, offset, 4, false) / 1000000, parseBytesIntToFloat(byteAT101, offset + 4, 4, false) / 1000000];", json!([24.62495, 118.030576])),
        ("var c = hexToBytes(\"0x32D009423F23B300B0106E08D96B6C00\"); var factor = 1e15; return [toFixed(parseBytesLongToDouble(c, 0, 8, false) / factor, 9), toFixed(parseBytesLongToDouble(c, 8, 8, false) / factor, 9)];", json!([50.422775429, 30.517877378])),
        ("return bytesToExecutionArrayList([0xAA, 0xBB, 0xCC, 0xDD]).size();", json!(4)),
        ("var byteVal = 0x39; return [parseByteToBinaryArray(byteVal), parseByteToBinaryArray(byteVal, 3), parseByteToBinaryArray(byteVal, 8, false), parseByteToBinaryArray(byteVal, 5, false), parseByteToBinaryArray(byteVal, 4, false), parseByteToBinaryArray(byteVal, 3, false), parseByteToBinaryArray(byteVal, 6, false)[5]];",
         json!([[0, 0, 1, 1, 1, 0, 0, 1], [0, 0, 1], [1, 0, 0, 1, 1, 1, 0, 0], [1, 0, 0, 1, 1], [1, 0, 0, 1], [1, 0, 0], 1])),
        ("var bytesVal = [0xCE, 0xB2]; return [parseBytesToBinaryArray(bytesVal), parseBytesToBinaryArray(bytesVal, 15), parseBytesToBinaryArray(bytesVal, 14), parseBytesToBinaryArray(bytesVal, 2)];",
         json!([[1, 1, 0, 0, 1, 1, 1, 0, 1, 0, 1, 1, 0, 0, 1, 0], [1, 0, 0, 1, 1, 1, 0, 1, 0, 1, 1, 0, 0, 1, 0], [0, 0, 1, 1, 1, 0, 1, 0, 1, 1, 0, 0, 1, 0], [1, 0]])),
        ("var longValue = 52914L; return [parseLongToBinaryArray(longValue).size(), parseLongToBinaryArray(longValue, 16)];", json!([64, [1, 1, 0, 0, 1, 1, 1, 0, 1, 0, 1, 1, 0, 0, 1, 0]])),
        ("return [parseBinaryArrayToInt([1, 0, 0, 1, 1, 1, 1, 1]), parseBinaryArrayToInt([1, 0, 0, 1, 1, 1, 1, 1], 1, 7)];", json!([-97, 31])),
        ("return [parseInt(\"0\"), parseInt(\"473\"), parseInt(\"+42\"), parseInt(\"-0\", 10), parseInt(\"-0xFF\"), parseInt(\"-FF\", 16), parseInt(\"1100110\", 2), parseInt(\"2147483647\", 10), parseInt(\"-2147483648\", 10), parseInt(\"Kona\", 27)];",
         json!([0, 473, 42, 0, -255, -255, 102, 2147483647, -2147483648, 411787])),
        ("return [parseLong(\"0\"), parseLong(\"473\"), parseLong(\"+42\"), parseLong(\"-0xFFFF\"), parseLong(\"-FFFF\", 16), parseLong(\"11001101100110\", 2), parseLong(\"KonaLong\", 27)];",
         json!([0, 473, 42, -65535, -65535, 13158, 218840926543_u64])),
        ("return [parseFloat(\"4.2\"), parseDouble(\"4.2\")];", json!([4.2, 4.2])),
        ("var x = true; var y = false; return [x & y, x | y, x ^ y, x << y, x >> y, x >>> y];", json!([0, 1, 1, 1, 1, 1])),
        ("var x = true; var y = false; var i = 10; var b = -14; return [x & b, i | y, i >>> x];", json!([0, 10, 5])),
        ("return [base64ToHex(\"Kkk=\"), bytesToBase64([42, 73]), base64ToBytes(\"Kkk=\"), base64ToBytesList(\"AQIDBAU=\")];", json!(["2A49", "Kkk=", [42, 73], [1, 2, 3, 4, 5]])),
    ]);
    for bad in [
        "parseInt(\"2147483648\", 10)",
        "parseInt(\"99\", 8)",
        "parseInt(\"Kona\", 10)",
        "parseLong(\"9223372036854775808\", 10)",
        "parseLong(\"0xFGFFFFFF\", 16)",
        "parseLong(\"1787\", 8)",
    ] {
        let h = host();
        let e = run_with(&h, &format!("return {bad};"), json!({})).unwrap_err();
        assert!(e.contains("NumberFormatException"), "{bad}: {e}");
    }
    let h = host();
    let e = run_with(&h, "var value = 4; var message = \"frequency_weighting_type must be 0, 1 or 2. A value of \" + value + \" is invalid.\"; return raiseError(message, value);", json!({})).unwrap_err();
    assert!(
        e.contains("frequency_weighting_type must be 0, 1 or 2. A value of 4 is invalid."),
        "{e}"
    );
}

#[test]
fn to_flat_map_as_documented() {
    let input = json!({
        "key1": "value1", "key2": 12,
        "key3": {"key4": "value4", "key5": 34,
                 "key6": [{"key7": "value7"}, {"key8": "value8"}, "just_string_value_in_array", 56],
                 "key9": {"key10": ["value10_1", "value10_2", "value10_3"]}},
        "key_to_overwrite": "root_value",
        "key11": {"key_to_overwrite": "second_level_value"}
    });
    // As text, so that the script sees the documented key order.
    let doc = r#"{"key1": "value1", "key2": 12, "key3": {"key4": "value4", "key5": 34, "key6": [{"key7": "value7"}, {"key8": "value8"}, "just_string_value_in_array", 56], "key9": {"key10": ["value10_1", "value10_2", "value10_3"]}}, "key_to_overwrite": "root_value", "key11": {"key_to_overwrite": "second_level_value"}}"#;
    assert_eq!(serde_json::from_str::<Json>(doc).ok(), Some(input));
    let text = json!({"doc": doc});
    let h = host();
    let go = |src: &str| {
        run_with(
            &h,
            &src.replace("(msg", "(JSON.parse(msg.doc)"),
            text.clone(),
        )
        .unwrap()
    };
    assert_eq!(
        go("return toFlatMap(msg);"),
        json!({
        "key1": "value1", "key2": 12, "key3.key4": "value4", "key3.key5": 34,
        "key3.key6.0.key7": "value7", "key3.key6.1.key8": "value8",
        "key3.key6.2": "just_string_value_in_array", "key3.key6.3": 56,
        "key3.key9.key10.0": "value10_1", "key3.key9.key10.1": "value10_2", "key3.key9.key10.2": "value10_3",
        "key_to_overwrite": "root_value", "key11.key_to_overwrite": "second_level_value"})
    );
    assert_eq!(
        go("return toFlatMap(msg, false);"),
        json!({
        "key1": "value1", "key2": 12, "key4": "value4", "key5": 34, "key7": "value7", "key8": "value8",
        "key6.2": "just_string_value_in_array", "key6.3": 56,
        "key10.0": "value10_1", "key10.1": "value10_2", "key10.2": "value10_3",
        "key_to_overwrite": "second_level_value"})
    );
    assert_eq!(
        go("return toFlatMap(msg, [\"key1\", \"key3\"]);"),
        json!({
        "key2": 12, "key_to_overwrite": "root_value", "key11.key_to_overwrite": "second_level_value"})
    );
    assert_eq!(
        go("return toFlatMap(msg, [\"key2\", \"key4\"], false);"),
        json!({
        "key1": "value1", "key5": 34, "key7": "value7", "key8": "value8",
        "key6.2": "just_string_value_in_array", "key6.3": 56,
        "key10.0": "value10_1", "key10.1": "value10_2", "key10.2": "value10_3",
        "key_to_overwrite": "second_level_value"})
    );
}

#[test]
fn dates_as_documented_in_utc() {
    golden(&[
        ("var d = new Date(\"2023-08-06T04:04:05.123Z\"); return d.toISOString();", json!("2023-08-06T04:04:05.123Z")),
        ("var d = new Date(\"2023-08-06T04:04:05.00-04\"); return d.toISOString();", json!("2023-08-06T08:04:05Z")),
        ("var d = new Date(\"2023-08-06T04:04:05.00+02:00\"); return d.toISOString();", json!("2023-08-06T02:04:05Z")),
        ("var d = new Date(\"2023-08-06T04:04:05.00+03:00:00\"); return d.toISOString();", json!("2023-08-06T01:04:05Z")),
        ("var d = new Date(\"Tue, 3 Jun 2008 11:05:30 GMT\"); return d.toISOString();", json!("2008-06-03T11:05:30Z")),
        ("var d = new Date(\"Tue, 3 Jun 2008 11:05:30 +043056\"); return d.toISOString();", json!("2008-06-03T06:34:34Z")),
        ("var pattern = \"yyyy-MM-dd HH:mm:ss.SSSXXX\"; var d = new Date(\"2023-08-06 04:04:05.000Z\", pattern); return d.toISOString();", json!("2023-08-06T04:04:05Z")),
        ("var pattern = \"yyyy-MM-dd HH:mm:ss.SSSXXX\"; var d = new Date(\"2023-08-06 04:04:05.000-04:00\", pattern); return d.toISOString();", json!("2023-08-06T08:04:05Z")),
        ("var d = new Date(2023, 8, 6, 4, 4, 5, \"UTC\"); return [d.toISOString(), d.toLocaleString()];", json!(["2023-08-06T04:04:05Z", "2023-08-06 04:04:05"])),
        ("var d = new Date(\"2023-08-06T04:04:05.00Z\"); return [d.toLocaleString(\"en-US\", \"+02:00\"), d.toLocaleString(\"de\", JSON.stringify({\"timeZone\": \"+02:00\"}))];", json!(["8/6/23, 6:04:05 AM", "06.08.23, 06:04:05"])),
        ("var d = new Date(2023, 8, 6, 4, 4, 5, \"UTC\"); var options = {\"timeZone\":\"+02:00\", \"pattern\": \"M-d/yyyy, h:mm=ss a\"}; return d.toLocaleString(\"en-US\", JSON.stringify(options));", json!("8-6/2023, 6:04=05 AM")),
        (
            "var d = new Date(\"2024-01-01T10:00:00.00Z\"); var out = [];\
             d.addYears(1); out.add(d.toISOString()); d.addYears(-2); out.add(d.toISOString());\
             d.addMonths(2); out.add(d.toISOString()); d.addMonths(10); out.add(d.toISOString());\
             d.addMonths(-13); out.add(d.toISOString()); d.addWeeks(4); out.add(d.toISOString());\
             d.addWeeks(-5); out.add(d.toISOString()); d.addDays(6); out.add(d.toISOString());\
             d.addDays(45); out.add(d.toISOString()); d.addDays(-50); out.add(d.toISOString());\
             d.addHours(23); out.add(d.toISOString()); d.addHours(-47); out.add(d.toISOString());\
             d.addMinutes(59); out.add(d.toISOString()); d.addMinutes(-60); out.add(d.toISOString());\
             d.addSeconds(59); out.add(d.toISOString()); d.addSeconds(-60); out.add(d.toISOString());\
             return out;",
            json!(["2025-01-01T10:00:00Z", "2023-01-01T10:00:00Z", "2023-03-01T10:00:00Z", "2024-01-01T10:00:00Z",
                   "2022-12-01T10:00:00Z", "2022-12-29T10:00:00Z", "2022-11-24T10:00:00Z", "2022-11-30T10:00:00Z",
                   "2023-01-14T10:00:00Z", "2022-11-25T10:00:00Z", "2022-11-26T09:00:00Z", "2022-11-24T10:00:00Z",
                   "2022-11-24T10:59:00Z", "2022-11-24T09:59:00Z", "2022-11-24T09:59:59Z", "2022-11-24T09:58:59Z"]),
        ),
        ("var d = new Date(0); return [d.getTime(), d.getUTCFullYear()];", json!([0, 1970])),
    ]);
    let h = host();
    let e = run_with(
        &h,
        "var d = new Date(2023, 8, 6, 4, 4, 5, \"Europe/Berlin\"); return d.toISOString();",
        json!({}),
    )
    .unwrap_err();
    assert!(e.contains("only UTC and fixed offsets"), "{e}");
}

#[test]
fn strings_behave_as_java_strings() {
    golden(&[
        ("var s = \"a,b,,c,,\"; return [s.split(\",\"), s.split(\",\", 2), s.length(), s.indexOf(\"b\"), s.contains(\"b,\"), s.toUpperCase()];", json!([["a", "b", "", "c"], ["a", "b,,c,,"], 8, 2, true, "A,B,,C,,"])),
        ("var s = \"temp_1.5_C\"; return [s.replace(\"_\", \" \"), s.replaceAll(\"[0-9]\", \"#\"), s.replaceFirst(\"_\", \"-\"), s.matches(\"temp_.*\"), s.substring(5), s.substring(5, 8), s.startsWith(\"temp\"), s.endsWith(\"C\")];",
         json!(["temp 1.5 C", "temp_#.#_C", "temp-1.5_C", true, "1.5_C", "1.5", true, true])),
        ("return [\"Ab\".equals(\"Ab\"), \"Ab\".equalsIgnoreCase(\"aB\"), \" x \".trim(), \"b\".compareTo(\"a\"), \"\".isEmpty(), \"abc\".charAt(1), \"ab\".toCharArray()];", json!([true, true, "x", 1, true, "b", ["a", "b"]])),
        ("return [String.format(\"%.2f %s %d %05d %x\", 3.14159, \"v\", 42, 7, 255), String.valueOf(1), String.join(\"-\", [\"a\", \"b\"])];", json!(["3.14 v 42 00007 ff", "1", "a-b"])),
        ("return [(1).toString(), 2.5.intValue(), Integer.toHexString(-1), Long.toBinaryString(5), Math.toDegrees(Math.PI), Math.floorMod(-7, 3), Boolean.parseBoolean(\"TRUE\")];", json!(["1", 2, "ffffffff", "101", 180.0, 2, true])),
    ]);
}

#[test]
fn equality_compares_values() {
    golden(&[
        ("return [[1, 2] == [1, 2], {\"a\": [1]} == {\"a\": [1]}, {\"a\": 1} != {\"a\": 2}, \"123\" == 123, msg.missing == null, null == nil];", json!([true, true, true, true, true, true])),
        ("var l = [\"x\", [1]]; return [l.contains([1]), l.indexOf([1]), l.remove([1]), l];", json!([true, 1, true, ["x"]])),
    ]);
}

#[test]
fn script_node_shapes() {
    golden(&[
        ("msg.f = msg.temperature * 9 / 5 + 32; metadata.unit = 'F'; return {msg: msg, metadata: metadata, msgType: msgType};",
         json!({"msg": {"temperature": 21.5, "humidity": 40, "f": 70.7}, "metadata": {"deviceName": "boiler-1", "deviceType": "default", "unit": "F"}, "msgType": "POST_TELEMETRY_REQUEST"})),
        ("if (msg.temperature > 20) { return ['hot']; } else { return ['normal']; }", json!(["hot"])),
        ("if (msg.temperature > 20) { ['hot'] } else { ['normal'] }", json!(["hot"])),
        ("return '\\nIncoming message:\\n' + JSON.stringify(msg) + '\\nIncoming metadata:\\n' + JSON.stringify(metadata);",
         json!("\nIncoming message:\n{\"humidity\":40,\"temperature\":21.5}\nIncoming metadata:\n{\"deviceName\":\"boiler-1\",\"deviceType\":\"default\"}")),
        ("var details = {}; if (metadata.prevAlarmDetails != null) { details = JSON.parse(metadata.prevAlarmDetails); } details.count = (details.count == null ? 1 : details.count + 1); return details;", json!({"count": 1})),
        ("function add(a, b) { a + b } var total = 0; function bump() { total = total + 1; } bump(); bump(); return [add(1, 2), total];", json!([3, 2])),
    ]);
}

#[test]
fn refusals_name_line_and_column() {
    let cases = [
        ("return msg.t > 1 &&;", "line 1, column 20"),
        (
            "var a = 1;\nreturn b + a;",
            "line 2, column 8: unknown variable `b`",
        ),
        (
            "var l = [1];\nreturn frobnicate(l);",
            "line 2, column 8: unknown function `frobnicate`",
        ),
        (
            "var x = new java.util.ArrayList();",
            "line 1, column 9: creating a `java.util.ArrayList` is not allowed",
        ),
        (
            "return System.currentTimeMillis();",
            "line 1, column 8: unknown variable `System`",
        ),
        (
            "return Math.frob(1);",
            "line 1, column 12: `Math.frob` is not supported",
        ),
        (
            "try { x = 1; } catch (e) {}",
            "line 1, column 1: `try` is not part of TBEL",
        ),
        (
            "var l = [1];\n  return l contains 1;",
            "line 2, column 12: the MVEL operator `contains` is not supported",
        ),
        ("return msg.a === 1;", "`===` is JavaScript"),
        ("var a = 1\nvar b = 2;", "line 2, column 1: expected `;`"),
        ("return 'open;", "line 1, column 8: unterminated string"),
        (
            "return java.io.File;",
            "the Java class `java.io.File` is not supported",
        ),
        ("5 = 3;", "line 1, column 1: this cannot be assigned to"),
        (
            "if (true) { function f() { 1 } }",
            "line 1, column 22: a function is defined at the top of the script",
        ),
        (
            "function f() { 1 }\nfunction f() { 2 }",
            "line 2, column 10: the function `f` is defined twice",
        ),
        (
            "function f(a, a) { a }",
            "line 1, column 15: the parameter `a` is named twice",
        ),
        (&"(".repeat(500), "nested more than 64 deep"),
        (&"!".repeat(500), "nested more than 64 deep"),
        (&"if (true) {".repeat(300), "nested more than 64 deep"),
    ];
    let mut wrong = Vec::new();
    for (src, want) in cases {
        let got = refused(src);
        if !got.contains(want) {
            wrong.push(format!("{src:?}: want {want:?}, got {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn scripts_cannot_reach_globals_or_each_other() {
    let h = host();
    // A name a JS script could use is just an unknown variable in TBEL.
    assert!(h
        .compile_tbel("return globalThis;")
        .unwrap_err()
        .contains("unknown variable"));
    assert!(h
        .compile_tbel("return __tb;")
        .unwrap_err()
        .contains("unknown variable"));
    // An undeclared assignment stays local to the script.
    let a = h.compile_tbel("leak = 1; return leak;").unwrap();
    assert_eq!(h.call(&a, &json!({}), &json!({}), "X"), Ok(json!(1)));
    let probe = h.compile("return typeof leak + typeof $leak;").unwrap();
    assert_eq!(
        h.call(&probe, &json!({}), &json!({}), "X"),
        Ok(json!("undefinedundefined"))
    );
    // The prelude is frozen.
    let t = h
        .compile("try { __tb.eq = null; } catch (e) {} return typeof __tb.eq;")
        .unwrap();
    assert_eq!(
        h.call(&t, &json!({}), &json!({}), "X"),
        Ok(json!("function"))
    );
}

#[test]
fn runaway_tbel_is_stopped_like_js() {
    let h = ScriptHost::new(4 << 20, Duration::from_millis(50)).unwrap();
    let s = h.compile_tbel("var i = 0; while (true) { i++; }").unwrap();
    assert!(matches!(
        h.call(&s, &json!({}), &json!({}), "X"),
        Err(crate::script::ScriptError::Timeout(_))
    ));
    let s = h
        .compile_tbel("var l = []; while (true) { l.add(new int[10000]); }")
        .unwrap();
    let r = h.call(&s, &json!({}), &json!({}), "X");
    assert!(
        matches!(&r, Err(crate::script::ScriptError::Thrown(e)) if e.contains("memory")),
        "{r:?}"
    );
    let ok = h.compile_tbel("return msg.x + 1;").unwrap();
    assert_eq!(h.call(&ok, &json!({"x": 1}), &json!({}), "X"), Ok(json!(2)));
}

/// Names the translator allows that the prelude does not define.
fn missing_in_prelude(h: &ScriptHost) -> Vec<String> {
    let defined = |expr: String| {
        let s = h.compile(&format!("return typeof {expr};")).unwrap();
        !matches!(h.call(&s, &json!({}), &json!({}), "X"), Ok(Json::String(t)) if t == "undefined")
    };
    let functions = crate::tbel::FUNCTIONS.iter().map(|f| format!("__tb.f.{f}"));
    let members = crate::tbel::CLASSES
        .iter()
        .flat_map(|(class, members)| members.iter().map(move |m| format!("__tb.cls.{class}.{m}")));
    functions
        .chain(members)
        .filter(|e| !defined(e.clone()))
        .collect()
}

#[test]
fn every_listed_function_and_class_member_exists_in_the_prelude() {
    let h = host();
    // The prelude is loaded by the first TBEL script, not before.
    let s = h.compile("return typeof __tb;").unwrap();
    assert_eq!(
        h.call(&s, &json!({}), &json!({}), "X"),
        Ok(json!("undefined"))
    );
    h.compile_tbel("return 1;").unwrap();
    let missing = missing_in_prelude(&h);
    assert!(missing.is_empty(), "missing in prelude.js: {missing:?}");
}
