// TBEL's runtime for translated scripts: value equality, Java-style
// methods of lists, maps, strings and numbers, ThingsBoard's helper
// functions and the few Java classes TBEL allows. Loaded once per chain
// runtime, frozen, and reachable only as the global `__tb` (translated
// scripts cannot name it: their own names all start with `$`).
(function () {
  "use strict";
  const hasOwn = (o, k) => Object.prototype.hasOwnProperty.call(o, k);
  const isList = (v) => Array.isArray(v);
  const isMap = (v) =>
    v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof TbDate);
  const kind = (v) =>
    v === null || v === undefined ? "null" : isList(v) ? "list" : v instanceof TbDate ? "Date"
      : isMap(v) ? "map" : typeof v;
  const nn = (v) => (v === undefined ? null : v);
  const int = (v, what) => {
    const n = Number(v);
    if (!Number.isInteger(n)) throw new TypeError(`${what}: expected an integer, got ${v}`);
    return n;
  };
  const fail = (m) => { throw new Error(m); };

  // ---- equality and truth ----------------------------------------------
  function eq(a, b) {
    a = nn(a); b = nn(b);
    if (a === b) return true;
    if (a === null || b === null) return false;
    const oa = typeof a === "object", ob = typeof b === "object";
    if (oa && ob) {
      if (a instanceof TbDate || b instanceof TbDate) return a.valueOf() === b.valueOf();
      if (isList(a) !== isList(b)) return false;
      if (isList(a)) {
        if (a.length !== b.length) return false;
        for (let i = 0; i < a.length; i++) if (!eq(a[i], b[i])) return false;
        return true;
      }
      const ka = Object.keys(a);
      if (ka.length !== Object.keys(b).length) return false;
      for (const k of ka) if (!hasOwn(b, k) || !eq(a[k], b[k])) return false;
      return true;
    }
    if (oa || ob) return false;
    return a == b;
  }
  const compare = (a, b) => {
    const na = numeric(a), nb = numeric(b);
    if (na && nb) return Number(a) - Number(b);
    const sa = String(a), sb = String(b);
    return sa < sb ? -1 : sa > sb ? 1 : 0;
  };
  const numeric = (v) =>
    typeof v === "number" || (typeof v === "string" && v.trim() !== "" && !isNaN(Number(v)));
  const allNumeric = (l) => l.every(numeric);
  const sorter = (l, asc) => {
    const num = allNumeric(l);
    const cmp = num ? (a, b) => Number(a) - Number(b) : (a, b) => compare(String(a), String(b));
    return asc === false ? (a, b) => cmp(b, a) : cmp;
  };
  const javaString = (v) => {
    v = nn(v);
    if (v === null) return "null";
    if (isList(v)) return "[" + v.map(javaString).join(", ") + "]";
    if (v instanceof TbDate) return v.toString();
    if (isMap(v)) return "{" + Object.keys(v).map((k) => k + "=" + javaString(v[k])).join(", ") + "}";
    return String(v);
  };
  const memory = (v) => {
    v = nn(v);
    if (v === null) return 0;
    if (typeof v === "string") return 2 * v.length;
    if (typeof v !== "object") return 8;
    if (isList(v)) return v.reduce((s, x) => s + memory(x), 0);
    return Object.keys(v).reduce((s, k) => s + 2 * k.length + memory(v[k]), 0);
  };

  // ---- property access -------------------------------------------------
  function p(o, name) {
    if (o === null || o === undefined) throw new TypeError(`cannot read ${name} of null`);
    if (typeof o === "string" || isList(o)) return name === "empty" ? o.length === 0 : o.length;
    if (isMap(o)) {
      if (hasOwn(o, name)) return o[name];
      const n = Object.keys(o).length;
      return name === "empty" ? n === 0 : n;
    }
    return nn(o[name]);
  }
  const pn = (o, name) => (o === null || o === undefined ? null : p(o, name));
  const key = (k) => {
    if (k === "__proto__") fail("the key __proto__ is not allowed");
    return k;
  };
  function iter(c) {
    c = nn(c);
    if (c === null) return [];
    if (isList(c)) return c;
    if (typeof c === "string") return Array.from(c);
    if (isMap(c)) return Object.values(c);
    throw new TypeError(`foreach over a ${kind(c)}`);
  }

  // ---- methods ---------------------------------------------------------
  const table = (o) => Object.assign(Object.create(null), o);
  const mutable = (o, what) => {
    if (Object.isFrozen(o)) fail(`${what} is unmodifiable`);
    return o;
  };
  const L = (l) => mutable(l, "List");
  const M = (m) => mutable(m, "Map");
  const index = (l, i, size) => {
    i = int(i, "index");
    if (i < 0 || i >= size) throw new RangeError(`index ${i} out of bounds for length ${size}`);
    return i;
  };
  const common = {
    toString: (o) => javaString(o),
    equals: (o, x) => eq(o, x),
    hashCode: (o) => STR.hashCode(javaString(o)),
  };
  const LIST = table({
    ...common,
    size: (l) => l.length,
    length: (l) => l.length,
    isEmpty: (l) => l.length === 0,
    get: (l, i) => nn(l[index(l, i, l.length)]),
    add: (l, a, b) => {
      if (b === undefined) { L(l).push(a); return true; }
      L(l).splice(index(l, a, l.length + 1), 0, b);
      return null;
    },
    addAll: (l, a, b) => {
      if (b === undefined) { L(l).push(...iter(a)); return true; }
      L(l).splice(index(l, a, l.length + 1), 0, ...iter(b));
      return true;
    },
    push: (l, ...x) => { L(l).push(...x); return true; },
    unshift: (l, ...x) => { L(l).unshift(...x); return null; },
    remove: (l, x) => {
      if (typeof x === "number" && Number.isInteger(x)) {
        return L(l).splice(index(l, x, l.length), 1)[0];
      }
      const i = l.findIndex((v) => eq(v, x));
      if (i < 0) return false;
      L(l).splice(i, 1);
      return true;
    },
    shift: (l) => nn(L(l).shift()),
    pop: (l) => nn(L(l).pop()),
    splice: (l, ...a) => L(l).splice(...a),
    set: (l, i, v) => { const j = index(l, i, l.length); const old = l[j]; L(l)[j] = v; return old; },
    sort: (l, asc) => { L(l).sort(sorter(l, asc)); return null; },
    reverse: (l) => { L(l).reverse(); return null; },
    fill: (l, v, s, e) => L(l).fill(v, s, e),
    toSorted: (l, asc) => l.slice().sort(sorter(l, asc)),
    toReversed: (l) => l.slice().reverse(),
    slice: (l, s, e) => l.slice(s, e),
    with: (l, i, v) => { const c = l.slice(); c[index(l, i, l.length)] = v; return c; },
    concat: (l, ...x) => l.concat(...x),
    join: (l, sep) => l.map(javaString).join(sep === undefined ? "," : sep),
    toSpliced: (l, ...a) => { const c = l.slice(); c.splice(...a); return c; },
    indexOf: (l, x, from) => { for (let i = from || 0; i < l.length; i++) if (eq(l[i], x)) return i; return -1; },
    lastIndexOf: (l, x) => { for (let i = l.length - 1; i >= 0; i--) if (eq(l[i], x)) return i; return -1; },
    contains: (l, x) => l.some((v) => eq(v, x)),
    containsAll: (l, xs) => iter(xs).every((x) => l.some((v) => eq(v, x))),
    includes: (l, x) => l.some((v) => eq(v, x)),
    clear: (l) => { L(l).length = 0; return null; },
    memorySize: (l) => memory(l),
    toUnmodifiable: (l) => Object.freeze(l.slice()),
    validateClazzInArrayIsOnlyNumber: (l) => l.every((v) => typeof v === "number"),
  });
  const MAP = table({
    ...common,
    toString: (m) => JSON.stringify(m),
    size: (m) => Object.keys(m).length,
    isEmpty: (m) => Object.keys(m).length === 0,
    get: (m, k) => (hasOwn(m, k) ? nn(m[k]) : null),
    getOrDefault: (m, k, d) => (hasOwn(m, k) ? nn(m[k]) : d),
    put: (m, k, v) => { const old = MAP.get(m, k); M(m)[key(k)] = v; return old; },
    putIfAbsent: (m, k, v) => {
      if (hasOwn(m, k) && m[k] !== null) return m[k];
      M(m)[key(k)] = v;
      return null;
    },
    replace: (m, k, a, b) => {
      if (!hasOwn(m, k)) return b === undefined ? null : false;
      if (b === undefined) { const old = m[k]; M(m)[k] = a; return old; }
      if (!eq(m[k], a)) return false;
      M(m)[k] = b;
      return true;
    },
    remove: (m, k) => { const old = MAP.get(m, k); if (hasOwn(m, k)) delete M(m)[k]; return old; },
    containsKey: (m, k) => hasOwn(m, k),
    containsValue: (m, v) => Object.values(m).some((x) => eq(x, v)),
    keys: (m) => Object.keys(m),
    keySet: (m) => Object.keys(m),
    values: (m) => Object.values(m),
    entrySet: (m) => Object.keys(m).map((k) => ({ key: k, value: m[k] })),
    putAll: (m, o) => { for (const k of Object.keys(o)) M(m)[key(k)] = o[k]; return null; },
    sortByKey: (m) => reorder(m, Object.keys(m).sort(compare)),
    sortByValue: (m) => reorder(m, Object.keys(m).sort((a, b) => compare(m[a], m[b]))),
    clear: (m) => { for (const k of Object.keys(m)) delete M(m)[k]; return null; },
    memorySize: (m) => memory(m),
    toUnmodifiable: (m) => Object.freeze(Object.assign({}, m)),
    getKey: (e) => nn(e.key),
    getValue: (e) => nn(e.value),
  });
  function reorder(m, keys) {
    const vals = keys.map((k) => m[k]);
    for (const k of keys) delete M(m)[k];
    keys.forEach((k, i) => { m[k] = vals[i]; });
    return null;
  }
  const javaSplit = (s, re, limit) => {
    limit = limit || 0;
    let parts = s.split(new RegExp(re));
    if (limit > 0 && parts.length > limit) {
      // Java keeps the rest of the string in the last part.
      const head = parts.slice(0, limit - 1);
      let rest = s;
      const r = new RegExp(re, "g");
      let m, n = 0, cut = 0;
      while (n < limit - 1 && (m = r.exec(rest)) !== null) {
        cut = m.index + m[0].length;
        n++;
        if (m[0].length === 0) r.lastIndex++;
      }
      parts = head.concat([s.slice(cut)]);
    }
    if (limit === 0) while (parts.length > 1 && parts[parts.length - 1] === "") parts.pop();
    return parts;
  };
  const STR = table({
    ...common,
    toString: (s) => s,
    length: (s) => s.length,
    size: (s) => s.length,
    isEmpty: (s) => s.length === 0,
    isBlank: (s) => s.trim().length === 0,
    charAt: (s, i) => s[index(s, i, s.length)],
    substring: (s, a, b) => {
      if (a < 0 || (b !== undefined && (b > s.length || a > b)) || a > s.length) {
        throw new RangeError(`substring(${a}, ${b}) of a string of length ${s.length}`);
      }
      return s.substring(a, b);
    },
    indexOf: (s, x, from) => s.indexOf(x, from),
    lastIndexOf: (s, x) => s.lastIndexOf(x),
    contains: (s, x) => s.includes(x),
    startsWith: (s, x) => s.startsWith(x),
    endsWith: (s, x) => s.endsWith(x),
    toUpperCase: (s) => s.toUpperCase(),
    toLowerCase: (s) => s.toLowerCase(),
    trim: (s) => s.trim(),
    strip: (s) => s.trim(),
    equals: (s, x) => s === x,
    equalsIgnoreCase: (s, x) => typeof x === "string" && s.toLowerCase() === x.toLowerCase(),
    split: (s, re, limit) => javaSplit(s, re, limit),
    replace: (s, a, b) => s.split(String(a)).join(String(b)),
    replaceAll: (s, re, b) => s.replace(new RegExp(re, "g"), b),
    replaceFirst: (s, re, b) => s.replace(new RegExp(re), b),
    matches: (s, re) => new RegExp("^(?:" + re + ")$").test(s),
    concat: (s, x) => s + x,
    repeat: (s, n) => s.repeat(n),
    compareTo: (s, x) => {
      const n = Math.min(s.length, x.length);
      for (let i = 0; i < n; i++) if (s[i] !== x[i]) return s.charCodeAt(i) - x.charCodeAt(i);
      return s.length - x.length;
    },
    compareToIgnoreCase: (s, x) => STR.compareTo(s.toLowerCase(), x.toLowerCase()),
    toCharArray: (s) => Array.from(s),
    getBytes: (s, cs) => F.stringToBytes(s, cs),
    hashCode: (s) => { let h = 0; for (let i = 0; i < s.length; i++) h = (31 * h + s.charCodeAt(i)) | 0; return h; },
    padStart: (s, n, c) => s.padStart(n, c),
    padEnd: (s, n, c) => s.padEnd(n, c),
  });
  const NUM = table({
    ...common,
    toString: (n, radix) => (radix ? n.toString(radix) : javaNumber(n)),
    intValue: (n) => Math.trunc(n) | 0,
    longValue: (n) => Math.trunc(n),
    shortValue: (n) => (Math.trunc(n) << 16) >> 16,
    byteValue: (n) => (Math.trunc(n) << 24) >> 24,
    doubleValue: (n) => n,
    floatValue: (n) => shortFloat(Math.fround(n)),
    compareTo: (n, x) => (n < x ? -1 : n > x ? 1 : 0),
    isNaN: (n) => Number.isNaN(n),
    toFixed: (n, d) => n.toFixed(d),
  });
  const javaNumber = (n) => String(n);
  const BOOL = table({ ...common, booleanValue: (b) => b });
  function c(o, m, ...a) {
    if (o === null || o === undefined) throw new TypeError(`${m}() called on null`);
    let t;
    if (isList(o)) t = LIST;
    else if (typeof o === "string") t = STR;
    else if (typeof o === "number") t = NUM;
    else if (typeof o === "boolean") t = BOOL;
    else if (o instanceof TbDate) {
      if (typeof TbDate.prototype[m] !== "function" || m === "constructor") {
        throw new TypeError(`no method ${m}() on a Date`);
      }
      return nn(o[m](...a));
    } else if (isMap(o)) t = MAP;
    const f = t && t[m];
    if (f === undefined) throw new TypeError(`no method ${m}() on a ${kind(o)}`);
    return nn(f(o, ...a));
  }
  const cn = (o, m, ...a) => (o === null || o === undefined ? null : c(o, m, ...a));

  // ---- numbers and bytes -----------------------------------------------
  /** The shortest decimal that is the same float32 (as Java prints a float). */
  function shortFloat(f) {
    if (!Number.isFinite(f) || Number.isInteger(f)) return f;
    for (let p = 1; p <= 9; p++) {
      const v = Number(f.toPrecision(p));
      if (Math.fround(v) === f) return v;
    }
    return f;
  }
  const roundHalfUp = (v, digits) => {
    const s = Math.sign(v), a = Math.abs(v);
    return s * Number(Math.round(Number(a + "e" + digits)) + "e-" + digits);
  };
  const u8 = (b) => Number(b) & 0xff;
  const s8 = (b) => ((Number(b) & 0xff) << 24) >> 24;
  const cleanHex = (h) => {
    h = String(h).trim();
    if (/^-?0[xX]/.test(h)) h = h.replace(/^(-?)0[xX]/, "$1");
    return h;
  };
  const hexBytes = (h) => {
    h = cleanHex(h);
    if (h.length % 2) h = "0" + h;
    if (!/^[0-9a-fA-F]*$/.test(h)) fail(`not a hex string: ${h}`);
    const out = [];
    for (let i = 0; i < h.length; i += 2) out.push(parseInt(h.substr(i, 2), 16));
    return out;
  };
  const toHex = (bytes) => bytes.map((b) => u8(b).toString(16).toUpperCase().padStart(2, "0")).join("");
  const bytesBig = (bytes) => bytes.reduce((acc, b) => (acc << 8n) | BigInt(u8(b)), 0n);
  const bigBytes = (v, n) => {
    const out = [];
    for (let i = 0; i < n; i++) { out.unshift(Number(v & 0xffn)); v >>= 8n; }
    return out;
  };
  const slice = (data, offset, length, dflt) => {
    const d = iter(data);
    offset = offset === undefined ? 0 : int(offset, "offset");
    length = length === undefined ? Math.min(dflt, d.length - offset) : int(length, "length");
    if (offset < 0 || length < 0 || offset + length > d.length) {
      throw new RangeError(`offset ${offset} and length ${length} outside ${d.length} bytes`);
    }
    return d.slice(offset, offset + length);
  };
  const ordered = (bytes, be) => (be === false ? bytes.slice().reverse() : bytes);
  const signedBig = (v, bits) => BigInt.asIntN(bits, v);
  const floatFromBits = (bytes4) => {
    const dv = new DataView(new ArrayBuffer(4));
    bytes4.forEach((b, i) => dv.setUint8(i, u8(b)));
    return shortFloat(dv.getFloat32(0));
  };
  const doubleFromBits = (bytes8) => {
    const dv = new DataView(new ArrayBuffer(8));
    bytes8.forEach((b, i) => dv.setUint8(i, u8(b)));
    return dv.getFloat64(0);
  };
  const pad = (bytes, n) => new Array(Math.max(0, n - bytes.length)).fill(0).concat(bytes);
  const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  function b64encode(bytes) {
    let out = "";
    for (let i = 0; i < bytes.length; i += 3) {
      const [a, b, c2] = [u8(bytes[i]), bytes[i + 1], bytes[i + 2]];
      const n = (a << 16) | ((b === undefined ? 0 : u8(b)) << 8) | (c2 === undefined ? 0 : u8(c2));
      out += B64[(n >> 18) & 63] + B64[(n >> 12) & 63];
      out += b === undefined ? "=" : B64[(n >> 6) & 63];
      out += c2 === undefined ? "=" : B64[n & 63];
    }
    return out;
  }
  function b64decode(s) {
    s = String(s).replace(/[\s=]/g, "");
    const out = [];
    let bits = 0, acc = 0;
    for (const ch of s) {
      const v = B64.indexOf(ch === "-" ? "+" : ch === "_" ? "/" : ch);
      if (v < 0) fail(`not base64: ${ch}`);
      acc = (acc << 6) | v;
      bits += 6;
      if (bits >= 8) { bits -= 8; out.push((acc >> bits) & 0xff); }
    }
    return out;
  }
  function utf8(s) {
    const out = [];
    for (const ch of String(s)) {
      let cp = ch.codePointAt(0);
      if (cp < 0x80) out.push(cp);
      else if (cp < 0x800) out.push(0xc0 | (cp >> 6), 0x80 | (cp & 63));
      else if (cp < 0x10000) out.push(0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 63), 0x80 | (cp & 63));
      else out.push(0xf0 | (cp >> 18), 0x80 | ((cp >> 12) & 63), 0x80 | ((cp >> 6) & 63), 0x80 | (cp & 63));
    }
    return out;
  }
  function fromUtf8(bytes) {
    const b = bytes.map(u8);
    let s = "";
    for (let i = 0; i < b.length;) {
      const x = b[i];
      let cp, n;
      if (x < 0x80) { cp = x; n = 1; }
      else if (x >= 0xf0) { cp = x & 7; n = 4; }
      else if (x >= 0xe0) { cp = x & 15; n = 3; }
      else if (x >= 0xc0) { cp = x & 31; n = 2; }
      else { cp = 0xfffd; n = 1; }
      for (let k = 1; k < n; k++) cp = (cp << 6) | ((b[i + k] || 0) & 63);
      s += String.fromCodePoint(cp > 0x10ffff ? 0xfffd : cp);
      i += n;
    }
    return s;
  }
  const latin1 = (cs) => cs !== undefined && /^(iso-?8859-?1|latin-?1|us-?ascii|ascii)$/i.test(cs);
  function javaParse(str, radix, bits) {
    let s = String(str).trim();
    let sign = 1n;
    if (s[0] === "+" || s[0] === "-") { if (s[0] === "-") sign = -1n; s = s.slice(1); }
    if (radix === undefined) {
      if (/^0[xX]/.test(s)) { radix = 16; s = s.slice(2); } else radix = 10;
    }
    radix = int(radix, "radix");
    const digits = "0123456789abcdefghijklmnopqrstuvwxyz".slice(0, radix);
    if (s === "" || ![...s.toLowerCase()].every((ch) => digits.includes(ch))) {
      throw new Error(`NumberFormatException: For input string: "${str}" under radix ${radix}`);
    }
    let v = 0n;
    for (const ch of s.toLowerCase()) v = v * BigInt(radix) + BigInt(digits.indexOf(ch));
    v *= sign;
    const lim = 1n << BigInt(bits - 1);
    if (v < -lim || v >= lim) {
      throw new Error(`NumberFormatException: For input string: "${str}" under radix ${radix}`);
    }
    return Number(v);
  }
  const radixCheck = (re, base) => (s) => (typeof s === "string" && re.test(s) ? base : -1);
  function flat(out, v, path, exclude, withPath) {
    const into = (name, x) => {
      if (x !== null && typeof x === "object") flat(out, x, name, exclude, withPath);
      else out[name] = x;
    };
    if (isList(v)) {
      v.forEach((x, i) => into(path + "." + i, x));
    } else {
      for (const k of Object.keys(v)) {
        if (exclude.includes(k)) continue;
        into(withPath && path ? path + "." + k : k, v[k]);
      }
    }
  }
  function minimalSignedBytes(v) {
    for (let k = 1; k <= 8; k++) {
      const lim = 1n << BigInt(8 * k - 1);
      if (v >= -lim && v < lim) return k;
    }
    return 8;
  }
  const F = {
    btoa: (s) => b64encode(Array.from(String(s), (ch) => ch.charCodeAt(0) & 0xff)),
    atob: (s) => String.fromCharCode(...b64decode(s)),
    toFixed: (v, p) => roundHalfUp(Number(v), int(p, "precision")),
    toInt: (v) => roundHalfUp(Number(v), 0),
    stringToBytes: (s, cs) =>
      latin1(cs) ? Array.from(String(s), (ch) => s8(ch.charCodeAt(0))) : utf8(s).map(s8),
    bytesToString: (b, cs) =>
      latin1(cs) ? String.fromCharCode(...iter(b).map(u8)) : fromUtf8(iter(b)),
    decodeToString: (b, cs) => F.bytesToString(b, cs),
    decodeToJson: (b) => JSON.parse(F.bytesToString(b)),
    isBinary: radixCheck(/^[01]+$/, 2),
    isOctal: radixCheck(/^[0-7]+$/, 8),
    isDecimal: radixCheck(/^-?[0-9]+(\.[0-9]+)?$/, 10),
    isHexadecimal: radixCheck(/^(0[xX])?[0-9a-fA-F]+$/, 16),
    isNaN: (v) => Number.isNaN(Number(v)),
    isMap: (v) => isMap(v),
    isList: (v) => isList(v),
    isArray: (v) => isList(v),
    encodeURI: (s) => encodeURI(s),
    decodeURI: (s) => decodeURI(s),
    raiseError: (m) => fail(String(m)),
    printUnsignedBytes: (b) => iter(b).map(u8),
    padStart: (s, n, c2) => String(s).padStart(n, c2),
    padEnd: (s, n, c2) => String(s).padEnd(n, c2),
    intToHex: (i, be, pref, len) => hexOf(BigInt.asUintN(32, BigInt(Math.trunc(i))), be, pref, len),
    longToHex: (l, be, pref, len) => hexOf(BigInt.asUintN(64, BigInt(Math.trunc(l))), be, pref, len),
    floatToHex: (f, be) => {
      const dv = new DataView(new ArrayBuffer(4));
      dv.setFloat32(0, f);
      return "0x" + toHex(ordered([0, 1, 2, 3].map((i) => dv.getUint8(i)), be));
    },
    doubleToHex: (d, be) => {
      const dv = new DataView(new ArrayBuffer(8));
      dv.setFloat64(0, d);
      return "0x" + toHex(ordered([0, 1, 2, 3, 4, 5, 6, 7].map((i) => dv.getUint8(i)), be));
    },
    intLongToRadixString: (n, radix, be, pref) => {
      const v = BigInt(Math.trunc(n));
      radix = radix === undefined ? 10 : radix;
      if (radix === 10) return v.toString();
      if (radix === 8) return BigInt.asUintN(64, v).toString(8);
      // As ThingsBoard: a negative number takes a byte more than its magnitude.
      const k = v < 0n ? Math.min(8, minimalSignedBytes(-v) + 1) : minimalSignedBytes(v);
      const bytes = ordered(bigBytes(BigInt.asUintN(8 * k, v), k), be);
      if (radix === 2) return bytes.map((b) => b.toString(2).padStart(8, "0")).join("");
      if (radix === 16) return (pref ? "0x" : "") + toHex(bytes);
      fail(`radix ${radix}: expected 2, 8, 10 or 16`);
    },
    parseHexToInt: (h, be) => {
      const b = ordered(hexBytes(h), be);
      return Number(b.length >= 4 ? signedBig(bytesBig(b), 32) : bytesBig(b));
    },
    parseLittleEndianHexToInt: (h) => F.parseHexToInt(h, false),
    parseBigEndianHexToInt: (h) => F.parseHexToInt(h, true),
    parseHexToLong: (h, be) => {
      const b = ordered(hexBytes(h), be);
      return Number(b.length >= 8 ? signedBig(bytesBig(b), 64) : bytesBig(b));
    },
    parseLittleEndianHexToLong: (h) => F.parseHexToLong(h, false),
    parseBigEndianHexToLong: (h) => F.parseHexToLong(h, true),
    parseHexToFloat: (h, be) => floatFromBits(pad(ordered(hexBytes(h), be), 4).slice(-4)),
    parseLittleEndianHexToFloat: (h) => F.parseHexToFloat(h, false),
    parseBigEndianHexToFloat: (h) => F.parseHexToFloat(h, true),
    parseHexIntLongToFloat: (h, be) => shortFloat(Math.fround(Number(bytesBig(ordered(hexBytes(h), be))))),
    parseHexToDouble: (h, be) => doubleFromBits(pad(ordered(hexBytes(h), be), 8).slice(-8)),
    parseLittleEndianHexToDouble: (h) => F.parseHexToDouble(h, false),
    parseBigEndianHexToDouble: (h) => F.parseHexToDouble(h, true),
    hexToBytes: (h) => hexBytes(h).map(s8),
    hexToBytesArray: (h) => hexBytes(h).map(s8),
    bytesToHex: (b) => toHex(iter(b)),
    parseBytesToInt: (d, o, l, be) => {
      const b = ordered(slice(d, o, l, 4), be);
      if (b.length > 4) fail("parseBytesToInt: length must be at most 4");
      return Number(b.length === 4 ? signedBig(bytesBig(b), 32) : bytesBig(b));
    },
    parseBytesToLong: (d, o, l, be) => {
      const b = ordered(slice(d, o, l, 8), be);
      if (b.length > 8) fail("parseBytesToLong: length must be at most 8");
      return Number(b.length === 8 ? signedBig(bytesBig(b), 64) : bytesBig(b));
    },
    parseBytesToFloat: (d, o, l, be) => floatFromBits(pad(ordered(slice(d, o, l, 4), be), 4)),
    parseBytesIntToFloat: (d, o, l, be) => {
      const b = ordered(slice(d, o, l, 4), be);
      const v = b.length === 4 ? signedBig(bytesBig(b), 32) : bytesBig(b);
      return shortFloat(Math.fround(Number(v)));
    },
    parseBytesToDouble: (d, o, l, be) => doubleFromBits(pad(ordered(slice(d, o, l, 8), be), 8)),
    parseBytesLongToDouble: (d, o, l, be) => {
      const b = ordered(slice(d, o, l, 8), be);
      return Number(b.length === 8 ? signedBig(bytesBig(b), 64) : bytesBig(b));
    },
    bytesToExecutionArrayList: (b) => iter(b).slice(),
    parseByteToBinaryArray: (v, len, be) => {
      len = len === undefined ? 8 : len;
      const bits = [];
      for (let i = 0; i < len; i++) bits.push((u8(v) >> i) & 1);
      return be === false ? bits : bits.reverse();
    },
    parseBytesToBinaryArray: (b, len) => {
      const bits = iter(b).flatMap((x) => F.parseByteToBinaryArray(x, 8, true));
      return len === undefined ? bits : bits.slice(Math.max(0, bits.length - len));
    },
    parseLongToBinaryArray: (v, len) => {
      const u = BigInt.asUintN(64, BigInt(Math.trunc(v)));
      const bits = u.toString(2).padStart(64, "0").split("").map(Number);
      return bits.slice(64 - (len === undefined ? 64 : Math.min(64, len)));
    },
    parseBinaryArrayToInt: (bits, o, l) => {
      const b = slice(bits, o, l, Infinity);
      const v = b.reduce((acc, x) => (acc << 1n) | BigInt(Number(x) & 1), 0n);
      return Number(b.length > 0 ? signedBig(v, b.length) : 0n);
    },
    parseInt: (s, radix) => javaParse(s, radix, 32),
    parseLong: (s, radix) => javaParse(s, radix, 64),
    parseFloat: (s) => shortFloat(Math.fround(Number(String(s).trim()))),
    parseDouble: (s) => Number(String(s).trim()),
    base64ToHex: (s) => toHex(b64decode(s)),
    bytesToBase64: (b) => b64encode(iter(b)),
    base64ToBytes: (s) => b64decode(s).map(s8),
    base64ToBytesList: (s) => b64decode(s).map(s8),
    toFlatMap: (json, a, b) => {
      let exclude = [], withPath = true;
      if (isList(a)) { exclude = a; if (b !== undefined) withPath = b !== false; }
      else if (a !== undefined) withPath = a !== false;
      const out = {};
      flat(out, json, "", exclude, withPath, "");
      return out;
    },
  };
  function hexOf(u, be, pref, len) {
    let h = u.toString(16).toUpperCase();
    if (h.length % 2) h = "0" + h;
    const bytes = hexBytes(h);
    let s = toHex(ordered(bytes, be));
    if (len !== undefined && len < s.length) s = s.slice(s.length - len);
    return (pref ? "0x" : "") + s;
  }

  // ---- dates -----------------------------------------------------------
  /** TBEL's Date: JavaScript's, in UTC, with its constructors and add*. */
  class TbDate extends Date {
    toISOString() {
      const iso = super.toISOString();
      return iso.endsWith(".000Z") ? iso.slice(0, -5) + "Z" : iso;
    }
    toString() { return this.toISOString(); }
    toJSON() { return this.toISOString(); }
    toLocaleString(locale, tz) { return localeString(this, locale, tz); }
    addYears(n) { this.setUTCFullYear(this.getUTCFullYear() + n); return null; }
    addMonths(n) { this.setUTCMonth(this.getUTCMonth() + n); return null; }
    addWeeks(n) { return this.addDays(7 * n); }
    addDays(n) { this.setTime(this.getTime() + n * 864e5); return null; }
    addHours(n) { this.setTime(this.getTime() + n * 36e5); return null; }
    addMinutes(n) { this.setTime(this.getTime() + n * 6e4); return null; }
    addSeconds(n) { this.setTime(this.getTime() + n * 1e3); return null; }
    addNanos(n) { this.setTime(this.getTime() + Math.trunc(n / 1e6)); return null; }
  }
  /** Offset in minutes of a zone given as UTC, GMT, Z or ±hh[:mm[:ss]]. */
  function zoneOffset(z) {
    if (z === undefined || z === null || /^(utc|gmt|z)$/i.test(z)) return 0;
    const m = /^(?:utc|gmt)?([+-])(\d{1,2})(?::?(\d{2}))?(?::?(\d{2}))?$/i.exec(String(z));
    if (!m) fail(`time zone ${z}: only UTC and fixed offsets (+02:00) are known on the gateway`);
    const v = Number(m[2]) * 60 + Number(m[3] || 0) + Number(m[4] || 0) / 60;
    return m[1] === "-" ? -v : v;
  }
  const two = (n) => String(n).padStart(2, "0");
  function localeString(d, locale, tz) {
    let opts = {};
    if (typeof tz === "string" && tz.trim().startsWith("{")) opts = JSON.parse(tz);
    else if (tz !== undefined) opts.timeZone = tz;
    const off = zoneOffset(opts.timeZone);
    const t = new Date(d.getTime() + off * 6e4);
    const Y = t.getUTCFullYear(), M = t.getUTCMonth() + 1, D = t.getUTCDate();
    const h = t.getUTCHours(), m = t.getUTCMinutes(), s = t.getUTCSeconds();
    if (opts.pattern) return formatPattern(t, opts.pattern);
    const loc = String(locale === undefined ? "UTC" : locale).toLowerCase();
    if (loc === "utc") return `${Y}-${two(M)}-${two(D)} ${two(h)}:${two(m)}:${two(s)}`;
    if (loc === "en-us" || loc === "en") {
      return `${M}/${D}/${two(Y % 100)}, ${h % 12 || 12}:${two(m)}:${two(s)} ${h < 12 ? "AM" : "PM"}`;
    }
    if (loc === "de" || loc.startsWith("de-")) {
      return `${two(D)}.${two(M)}.${two(Y % 100)}, ${two(h)}:${two(m)}:${two(s)}`;
    }
    return fail(`locale ${locale}: only UTC, en-US and de are known on the gateway`);
  }
  function formatPattern(t, pattern) {
    const f = {
      yyyy: () => String(t.getUTCFullYear()), uuuu: () => String(t.getUTCFullYear()),
      yy: () => two(t.getUTCFullYear() % 100), MM: () => two(t.getUTCMonth() + 1),
      M: () => String(t.getUTCMonth() + 1), dd: () => two(t.getUTCDate()),
      d: () => String(t.getUTCDate()), HH: () => two(t.getUTCHours()),
      H: () => String(t.getUTCHours()), hh: () => two(t.getUTCHours() % 12 || 12),
      h: () => String(t.getUTCHours() % 12 || 12), mm: () => two(t.getUTCMinutes()),
      ss: () => two(t.getUTCSeconds()), SSS: () => String(t.getUTCMilliseconds()).padStart(3, "0"),
      a: () => (t.getUTCHours() < 12 ? "AM" : "PM"),
    };
    return pattern.replace(/yyyy|uuuu|yy|MM|M|dd|d|HH|H|hh|h|mm|ss|SSS|a/g, (k) => f[k]());
  }
  /** Parses `s` by a Java pattern of numeric fields (yyyy MM dd HH mm ss SSS a XXX). */
  function parsePattern(s, pattern) {
    const fields = { y: 1970, M: 1, d: 1, H: 0, h: null, m: 0, s: 0, S: 0, pm: null, off: null };
    let i = 0;
    const tokens = pattern.match(/yyyy|uuuu|yy|MM|M|dd|d|HH|H|hh|h|mm|ss|SSS|a|XXX|XX|X|Z|'[^']*'|./g) || [];
    for (const tk of tokens) {
      const num = (min, max) => {
        const m = new RegExp(`^\\d{${min},${max}}`).exec(s.slice(i));
        if (!m) fail(`date ${s} does not match the pattern ${pattern}`);
        i += m[0].length;
        return Number(m[0]);
      };
      switch (tk) {
        case "yyyy": case "uuuu": fields.y = num(4, 4); break;
        case "yy": fields.y = 2000 + num(2, 2); break;
        case "MM": fields.M = num(2, 2); break;
        case "M": fields.M = num(1, 2); break;
        case "dd": fields.d = num(2, 2); break;
        case "d": fields.d = num(1, 2); break;
        case "HH": fields.H = num(2, 2); break;
        case "H": fields.H = num(1, 2); break;
        case "hh": fields.h = num(2, 2); break;
        case "h": fields.h = num(1, 2); break;
        case "mm": fields.m = num(2, 2); break;
        case "ss": fields.s = num(2, 2); break;
        case "SSS": fields.S = num(3, 3); break;
        case "a": {
          const m = /^(AM|PM)/i.exec(s.slice(i));
          if (!m) fail(`date ${s} does not match the pattern ${pattern}`);
          fields.pm = m[0].toUpperCase() === "PM";
          i += 2;
          break;
        }
        case "XXX": case "XX": case "X": case "Z": {
          const m = /^(Z|[+-]\d{2}(:?\d{2})?)/.exec(s.slice(i));
          if (!m) fail(`date ${s} does not match the pattern ${pattern}`);
          fields.off = zoneOffset(m[0]);
          i += m[0].length;
          break;
        }
        default:
          if (tk.startsWith("'")) { i += tk.length - 2; break; }
          if (s[i] !== tk) fail(`date ${s} does not match the pattern ${pattern}`);
          i += 1;
      }
    }
    let H = fields.H;
    if (fields.h !== null) H = (fields.h % 12) + (fields.pm ? 12 : 0);
    const ms = Date.UTC(fields.y, fields.M - 1, fields.d, H, fields.m, fields.s, fields.S);
    return ms - (fields.off || 0) * 6e4;
  }
  function parseIso(s) {
    const m = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?\s*(Z|[+-]\d{2}(?::?\d{2}(?::?\d{2})?)?)?$/i.exec(s);
    if (!m) return null;
    const ms = m[7] ? Number((m[7] + "00").slice(0, 3)) : 0;
    const t = Date.UTC(+m[1], +m[2] - 1, +m[3], +(m[4] || 0), +(m[5] || 0), +(m[6] || 0), ms);
    return t - zoneOffset(m[8]) * 6e4;
  }
  function parseRfc1123(s) {
    const m = /^(?:\w{3},\s*)?(\d{1,2})\s+(\w{3})\s+(\d{4})\s+(\d{2}):(\d{2})(?::(\d{2}))?\s*(GMT|UTC|Z|[+-]\d{2,6})?$/i.exec(s);
    if (!m) return null;
    const mon = "janfebmaraprmayjunjulaugsepoctnovdec".indexOf(m[2].toLowerCase()) / 3;
    if (mon < 0 || !Number.isInteger(mon)) return null;
    let off = 0;
    if (m[7] && /^[+-]/.test(m[7])) {
      const d = m[7].slice(1).padEnd(6, "0");
      off = (Number(d.slice(0, 2)) * 3600 + Number(d.slice(2, 4)) * 60 + Number(d.slice(4, 6))) / 60;
      if (m[7][0] === "-") off = -off;
    }
    return Date.UTC(+m[3], mon, +m[1], +m[4], +m[5], +(m[6] || 0)) - off * 6e4;
  }
  function newDate(...a) {
    if (a.length === 0) return new TbDate(Date.now());
    if (a.length === 1 && typeof a[0] === "number") return new TbDate(a[0]);
    if (typeof a[0] === "string") {
      if (a.length >= 2) {
        const t = parsePattern(a[0], a[1]);
        return new TbDate(t);
      }
      const t = parseIso(a[0].trim()) ?? parseRfc1123(a[0].trim());
      if (t === null) fail(`could not read the date ${a[0]}`);
      return new TbDate(t);
    }
    const nums = a.filter((x) => typeof x === "number");
    const tz = a.find((x) => typeof x === "string");
    const [y, mo = 1, d = 1, h = 0, mi = 0, s = 0, ms = 0] = nums;
    return new TbDate(Date.UTC(y, mo - 1, d, h, mi, s, ms) - zoneOffset(tz) * 6e4);
  }

  // ---- Java classes ----------------------------------------------------
  const format = (fmt, ...args) => {
    let k = 0;
    return String(fmt).replace(/%([-0+ ]*)(\d+)?(?:\.(\d+))?([sdfxXbcne%])/g, (all, flags, w, prec, conv) => {
      if (conv === "%") return "%";
      if (conv === "n") return "\n";
      const v = args[k++];
      let s;
      switch (conv) {
        case "d": s = String(Math.trunc(v)); break;
        case "f": s = Number(v).toFixed(prec === undefined ? 6 : Number(prec)); break;
        case "e": s = Number(v).toExponential(prec === undefined ? 6 : Number(prec)); break;
        case "x": s = (Math.trunc(v) >>> 0).toString(16); break;
        case "X": s = (Math.trunc(v) >>> 0).toString(16).toUpperCase(); break;
        case "b": s = String(!!v); break;
        case "c": s = String(v)[0]; break;
        default: s = javaString(v);
      }
      if (flags.includes("+") && conv !== "s" && Number(v) >= 0) s = "+" + s;
      if (w !== undefined) {
        const n = Number(w);
        if (flags.includes("-")) s = s.padEnd(n);
        else if (flags.includes("0")) s = s.startsWith("-") ? "-" + s.slice(1).padStart(n - 1, "0") : s.padStart(n, "0");
        else s = s.padStart(n);
      }
      return s;
    });
  };
  const radixString = (bits) => (n, radix) => {
    if (radix === undefined || radix === 10) return String(Math.trunc(n));
    return Math.trunc(n).toString(radix);
  };
  const unsigned = (bits, radix) => (n) => BigInt.asUintN(bits, BigInt(Math.trunc(n))).toString(radix);
  const cls = {
    Math: Object.assign(Object.create(null), {
      abs: Math.abs, acos: Math.acos, asin: Math.asin, atan: Math.atan, atan2: Math.atan2,
      cbrt: Math.cbrt, ceil: Math.ceil, cos: Math.cos, cosh: Math.cosh, exp: Math.exp,
      floor: Math.floor, hypot: Math.hypot, log: Math.log, log10: Math.log10, max: Math.max,
      min: Math.min, pow: Math.pow, random: Math.random, round: Math.round, sin: Math.sin,
      sinh: Math.sinh, sqrt: Math.sqrt, tan: Math.tan, tanh: Math.tanh, signum: Math.sign,
      floorDiv: (a, b) => Math.floor(a / b),
      floorMod: (a, b) => a - Math.floor(a / b) * b,
      toDegrees: (r) => (r * 180) / Math.PI,
      toRadians: (d) => (d * Math.PI) / 180,
      PI: Math.PI, E: Math.E,
    }),
    Integer: {
      parseInt: (s, r) => javaParse(s, r === undefined ? 10 : r, 32),
      valueOf: (s, r) => (typeof s === "number" ? Math.trunc(s) : javaParse(s, r === undefined ? 10 : r, 32)),
      toString: radixString(32),
      toHexString: unsigned(32, 16), toBinaryString: unsigned(32, 2), toOctalString: unsigned(32, 8),
      MAX_VALUE: 2147483647, MIN_VALUE: -2147483648,
    },
    Long: {
      parseLong: (s, r) => javaParse(s, r === undefined ? 10 : r, 64),
      valueOf: (s, r) => (typeof s === "number" ? Math.trunc(s) : javaParse(s, r === undefined ? 10 : r, 64)),
      toString: radixString(64),
      toHexString: unsigned(64, 16), toBinaryString: unsigned(64, 2), toOctalString: unsigned(64, 8),
      MAX_VALUE: 9223372036854775807, MIN_VALUE: -9223372036854775808,
    },
    Double: {
      parseDouble: (s) => F.parseDouble(s), valueOf: (s) => Number(s), toString: (d) => String(d),
      isNaN: (d) => Number.isNaN(d), isInfinite: (d) => d === Infinity || d === -Infinity,
      MAX_VALUE: Number.MAX_VALUE, MIN_VALUE: Number.MIN_VALUE,
    },
    Float: {
      parseFloat: (s) => F.parseFloat(s), valueOf: (s) => F.parseFloat(s), toString: (f) => String(f),
      isNaN: (d) => Number.isNaN(d), MAX_VALUE: 3.4028235e38, MIN_VALUE: 1.4e-45,
    },
    Boolean: {
      parseBoolean: (s) => s !== null && s !== undefined && String(s).toLowerCase() === "true",
      valueOf: (s) => (typeof s === "boolean" ? s : String(s).toLowerCase() === "true"),
      toString: (b) => String(b),
    },
    String: {
      valueOf: (v) => javaString(v),
      format,
      join: (sep, ...parts) => (parts.length === 1 && isList(parts[0]) ? parts[0] : parts).map(javaString).join(sep),
    },
    JSON: { stringify: (v) => JSON.stringify(v), parse: (s) => JSON.parse(s) },
    Collections: {
      reverse: (l) => LIST.reverse(l),
      sort: (l) => LIST.sort(l),
      max: (l) => l.slice().sort(sorter(l)).pop(),
      min: (l) => l.slice().sort(sorter(l))[0],
    },
    Arrays: { asList: (...x) => x, toString: (l) => javaString(l) },
    Date: { now: () => Date.now(), parse: (s) => newDate(s).getTime() },
  };

  const newArray = (n, type) => {
    const fill = type === "boolean" ? false : type === "char" ? "\u0000" : 0;
    return Object.seal(new Array(int(n, "array size")).fill(fill));
  };

  const tb = { eq, p, pn, c, cn, key, iter, newArray, newDate, f: F, cls };
  for (const v of Object.values(cls)) Object.freeze(v);
  Object.freeze(F);
  Object.freeze(cls);
  Object.freeze(tb);
  Object.defineProperty(globalThis, "__tb", { value: tb, writable: false, configurable: false, enumerable: false });
})();
