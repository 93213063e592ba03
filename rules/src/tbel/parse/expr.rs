//! TBEL expressions: precedence climbing over Java's operators, postfix
//! member access, calls and indexing, literals, `new`, and the Java classes.

use super::super::lex::Tok;
use super::super::{TbelError, CLASSES, FUNCTIONS};
use super::{is_keyword, quote, var, Expr, Parser, Place, MAX_DEPTH, PRIMITIVES, REFUSED_WORDS};

impl Parser {
    // ---- expressions -------------------------------------------------

    pub(super) fn expression(&mut self) -> Result<Expr, TbelError> {
        self.assignment()
    }

    pub(super) fn enter(&mut self) -> Result<(), TbelError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.error(format!("nested more than {MAX_DEPTH} deep"));
        }
        Ok(())
    }

    pub(super) fn assignment(&mut self) -> Result<Expr, TbelError> {
        self.enter()?;
        let r = self.assignment_inner();
        self.depth -= 1;
        r
    }

    pub(super) fn assignment_inner(&mut self) -> Result<Expr, TbelError> {
        let (l, c) = self.here();
        let target = self.ternary()?;
        let op = match self.peek() {
            Tok::Punct(
                p @ ("=" | "+=" | "-=" | "*=" | "/=" | "%=" | "&=" | "|=" | "^=" | "<<=" | ">>="
                | ">>>="),
            ) => *p,
            _ => return Ok(target),
        };
        self.pos += 1;
        let value = self.assignment()?;
        match &target.place {
            Place::Var(name) => {
                let name = name.clone();
                self.assign(&name);
                // The read recorded for the target is not a read.
                if op == "=" {
                    if let Some(i) = self.scopes[self.current]
                        .reads
                        .iter()
                        .rposition(|(n, ..)| *n == name)
                    {
                        self.scopes[self.current].reads.remove(i);
                    }
                }
            }
            Place::Member => {}
            _ => return Err(TbelError::at(l, c, "this cannot be assigned to")),
        }
        Ok(Expr::value(format!("({} {op} {})", target.js, value.js)))
    }

    pub(super) fn ternary(&mut self) -> Result<Expr, TbelError> {
        let cond = self.binary(0)?;
        if !self.eat("?") {
            return Ok(cond);
        }
        let a = self.assignment()?;
        self.expect(":")?;
        let b = self.assignment()?;
        Ok(Expr::value(format!(
            "(({}) ? {} : {})",
            cond.js, a.js, b.js
        )))
    }

    pub(super) fn binary(&mut self, min: u8) -> Result<Expr, TbelError> {
        let mut left = self.unary()?;
        while let Tok::Punct(p) = self.peek() {
            let (op, prec) = match binary_precedence(p) {
                Some(prec) if prec >= min => (*p, prec),
                _ => break,
            };
            if op == "===" || op == "!==" {
                return self.error(format!("`{op}` is JavaScript; TBEL compares with `==`"));
            }
            self.pos += 1;
            let right = self.binary(prec + 1)?;
            let js = match op {
                "==" => format!("__tb.eq({}, {})", left.js, right.js),
                "!=" => format!("!__tb.eq({}, {})", left.js, right.js),
                _ => format!("({} {op} {})", left.js, right.js),
            };
            left = Expr::value(js);
        }
        Ok(left)
    }

    pub(super) fn unary(&mut self) -> Result<Expr, TbelError> {
        let (l, c) = self.here();
        for op in ["!", "-", "+", "~", "++", "--"] {
            if self.eat(op) {
                self.enter()?;
                let e = self.unary();
                self.depth -= 1;
                let e = e?;
                if op == "++" || op == "--" {
                    return self.step(e, op, true, l, c);
                }
                return Ok(Expr::value(if op == "!" {
                    format!("(!{})", e.js)
                } else {
                    format!("({op}{})", e.js)
                }));
            }
        }
        let e = self.postfix()?;
        if self.is("++") || self.is("--") {
            let op = if self.eat("++") {
                "++"
            } else {
                self.expect("--").map(|_| "--")?
            };
            return self.step(e, op, false, l, c);
        }
        Ok(e)
    }

    pub(super) fn step(
        &mut self,
        e: Expr,
        op: &str,
        pre: bool,
        l: u32,
        c: u32,
    ) -> Result<Expr, TbelError> {
        match &e.place {
            Place::Var(name) => {
                let name = name.clone();
                self.assign(&name);
            }
            Place::Member => {}
            _ => return Err(TbelError::at(l, c, format!("`{op}` needs a variable"))),
        }
        Ok(Expr::value(if pre {
            format!("({op}{})", e.js)
        } else {
            format!("({}{op})", e.js)
        }))
    }

    pub(super) fn arguments(&mut self) -> Result<Vec<String>, TbelError> {
        let mut args = Vec::new();
        if self.eat(")") {
            return Ok(args);
        }
        loop {
            args.push(self.expression()?.js);
            if self.eat(")") {
                return Ok(args);
            }
            self.expect(",")?;
        }
    }

    pub(super) fn postfix(&mut self) -> Result<Expr, TbelError> {
        let mut e = self.primary()?;
        // After `.?`, the rest of the chain yields null on a null.
        let mut safe = false;
        loop {
            let (l, c) = self.here();
            if self.is(".") || self.is(".?") {
                if self.eat(".?") {
                    safe = true;
                } else {
                    self.pos += 1;
                }
                let name = match self.next().tok {
                    Tok::Ident(n) => n,
                    t => {
                        return Err(TbelError::at(
                            l,
                            c,
                            format!("expected a name after `.`, found {}", Self::describe(&t)),
                        ))
                    }
                };
                if let Place::Class(class) = e.place {
                    e = self.static_member(class, &name, l, c)?;
                    continue;
                }
                if self.eat("(") {
                    let args = self.arguments()?;
                    let f = if safe { "cn" } else { "c" };
                    let mut js = format!("__tb.{f}({}, {}", e.js, quote(&name));
                    for a in args {
                        js.push_str(", ");
                        js.push_str(&a);
                    }
                    js.push(')');
                    e = Expr::value(js);
                } else if matches!(name.as_str(), "size" | "length" | "empty") {
                    let f = if safe { "pn" } else { "p" };
                    e = Expr::value(format!("__tb.{f}({}, {})", e.js, quote(&name)));
                } else {
                    let dot = if safe { "?." } else { "." };
                    let js = if is_js_name(&name) {
                        format!("{}{dot}{name}", e.js)
                    } else {
                        format!("{}{}[{}]", e.js, if safe { "?." } else { "" }, quote(&name))
                    };
                    e = Expr {
                        js,
                        place: if safe { Place::Value } else { Place::Member },
                    };
                }
            } else if self.eat("[") {
                if let Place::Class(class) = e.place {
                    return Err(TbelError::at(
                        l,
                        c,
                        format!("`{class}[...]` is not supported"),
                    ));
                }
                let i = self.expression()?;
                self.expect("]")?;
                let js = if safe {
                    format!("{}?.[__tb.key({})]", e.js, i.js)
                } else {
                    format!("{}[__tb.key({})]", e.js, i.js)
                };
                e = Expr {
                    js,
                    place: if safe { Place::Value } else { Place::Member },
                };
            } else {
                break;
            }
        }
        if let Place::Class(class) = e.place {
            return self.error(format!(
                "the class `{class}` can only be used as `{class}.member`"
            ));
        }
        Ok(e)
    }

    pub(super) fn static_member(
        &mut self,
        class: &'static str,
        name: &str,
        l: u32,
        c: u32,
    ) -> Result<Expr, TbelError> {
        let members = CLASSES
            .iter()
            .find(|(n, _)| *n == class)
            .map(|(_, m)| *m)
            .unwrap_or_default();
        if !members.contains(&name) {
            return Err(TbelError::at(
                l,
                c,
                format!("`{class}.{name}` is not supported"),
            ));
        }
        let target = format!("__tb.cls.{class}.{name}");
        if self.eat("(") {
            let args = self.arguments()?;
            Ok(Expr::value(format!("{target}({})", args.join(", "))))
        } else {
            Ok(Expr::value(target))
        }
    }

    pub(super) fn primary(&mut self) -> Result<Expr, TbelError> {
        let t = self.next();
        let (l, c) = (t.line, t.col);
        match t.tok {
            // `5.toString()`: JavaScript would read `5.` as the number.
            Tok::Num(n) if self.is(".") || self.is(".?") => Ok(Expr::value(format!("({n})"))),
            Tok::Num(n) => Ok(Expr::value(n)),
            Tok::Str(s) => Ok(Expr::value(quote(&s))),
            Tok::Punct("(") => {
                let e = self.expression()?;
                self.expect(")")?;
                Ok(Expr::value(format!("({})", e.js)))
            }
            Tok::Punct("[") => {
                let items = self.items("]")?;
                Ok(Expr::value(format!("[{}]", items.join(", "))))
            }
            Tok::Punct("{") => self.map_or_array(),
            Tok::Ident(w) => self.word(w, l, c),
            other => Err(TbelError::at(
                l,
                c,
                format!("expected a value, found {}", Self::describe(&other)),
            )),
        }
    }

    pub(super) fn items(&mut self, close: &str) -> Result<Vec<String>, TbelError> {
        let mut items = Vec::new();
        if self.eat(close) {
            return Ok(items);
        }
        loop {
            items.push(self.expression()?.js);
            if self.eat(close) {
                return Ok(items);
            }
            self.expect(",")?;
            if self.eat(close) {
                return Ok(items);
            }
        }
    }

    /// `{}` / `{k: v, ...}` (a map) or `{a, b}` (MVEL's inline array).
    pub(super) fn map_or_array(&mut self) -> Result<Expr, TbelError> {
        if self.eat("}") {
            return Ok(Expr::value("{}".into()));
        }
        let is_map = matches!(self.peek_at(1), Tok::Punct(":"));
        if !is_map {
            let items = self.items("}")?;
            return Ok(Expr::value(format!("[{}]", items.join(", "))));
        }
        let mut parts = Vec::new();
        loop {
            let key = match self.next().tok {
                Tok::Ident(k) | Tok::Str(k) => k,
                Tok::Num(n) => n,
                t => {
                    return self.error(format!("expected a map key, found {}", Self::describe(&t)))
                }
            };
            self.expect(":")?;
            let v = self.expression()?;
            parts.push(format!("[{}]: {}", quote(&key), v.js));
            if self.eat("}") {
                break;
            }
            self.expect(",")?;
            if self.eat("}") {
                break;
            }
        }
        Ok(Expr::value(format!("({{{}}})", parts.join(", "))))
    }

    pub(super) fn word(&mut self, w: String, l: u32, c: u32) -> Result<Expr, TbelError> {
        match w.as_str() {
            "true" | "false" => return Ok(Expr::value(w)),
            "null" | "nil" => return Ok(Expr::value("null".into())),
            "new" => return self.new_expr(l, c),
            "java" => return self.java_class(l, c),
            _ => {}
        }
        if REFUSED_WORDS.contains(&w.as_str()) || is_keyword(&w) {
            return Err(TbelError::at(l, c, format!("`{w}` is not expected here")));
        }
        if let Some((class, _)) = CLASSES.iter().find(|(n, _)| *n == w) {
            if self.is(".") {
                return Ok(Expr {
                    js: String::new(),
                    place: Place::Class(class),
                });
            }
        }
        if self.eat("(") {
            let args = self.arguments()?;
            if self.functions.contains(&w) {
                return Ok(Expr::value(format!("{}({})", var(&w), args.join(", "))));
            }
            if FUNCTIONS.contains(&w.as_str()) {
                return Ok(Expr::value(format!("__tb.f.{w}({})", args.join(", "))));
            }
            return Err(TbelError::at(l, c, format!("unknown function `{w}`")));
        }
        self.scopes[self.current].reads.push((w.clone(), l, c));
        Ok(Expr {
            js: var(&w),
            place: Place::Var(w),
        })
    }

    /// `java.util.Collections` / `java.lang.Math`: the class.
    pub(super) fn java_class(&mut self, l: u32, c: u32) -> Result<Expr, TbelError> {
        let mut path = vec!["java".to_string()];
        while self.eat(".") {
            path.push(self.ident()?);
            if let Some((class, _)) = CLASSES.iter().find(|(n, _)| *n == path[path.len() - 1]) {
                return Ok(Expr {
                    js: String::new(),
                    place: Place::Class(class),
                });
            }
        }
        Err(TbelError::at(
            l,
            c,
            format!("the Java class `{}` is not supported", path.join(".")),
        ))
    }

    pub(super) fn new_expr(&mut self, l: u32, c: u32) -> Result<Expr, TbelError> {
        let mut path = vec![self.ident()?];
        while self.eat(".") {
            path.push(self.ident()?);
        }
        let class = path.join(".");
        if PRIMITIVES.contains(&class.as_str()) && self.eat("[") {
            if self.eat("]") {
                self.expect("{")?;
                let items = self.items("}")?;
                return Ok(Expr::value(format!("[{}]", items.join(", "))));
            }
            let n = self.expression()?;
            self.expect("]")?;
            return Ok(Expr::value(format!(
                "__tb.newArray({}, {})",
                n.js,
                quote(&class)
            )));
        }
        if class == "Date" && self.eat("(") {
            let args = self.arguments()?;
            return Ok(Expr::value(format!("__tb.newDate({})", args.join(", "))));
        }
        Err(TbelError::at(
            l,
            c,
            format!("creating a `{class}` is not allowed (only primitive arrays and Date)"),
        ))
    }
}

fn binary_precedence(op: &str) -> Option<u8> {
    Some(match op {
        "||" => 1,
        "&&" => 2,
        "|" => 3,
        "^" => 4,
        "&" => 5,
        "==" | "!=" | "===" | "!==" => 6,
        "<" | ">" | "<=" | ">=" => 7,
        "<<" | ">>" | ">>>" => 8,
        "+" | "-" => 9,
        "*" | "/" | "%" => 10,
        _ => return None,
    })
}

/// A member name that can follow a `.` in JavaScript unchanged.
fn is_js_name(n: &str) -> bool {
    !matches!(n, "__proto__" | "constructor" | "prototype")
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}
