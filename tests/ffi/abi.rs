//! The header drift check's machinery: reads the ABI out of `src/ffi/*.rs` (exports written
//! `fn sseloop_*(..)` inside `ffi_fn!`, `pub const SSELOOP_*`, `#[repr(C)]` structs, callback
//! `pub type`s), reads names and constants out of `include/sseloop.h`, and writes a C file that
//! only compiles when every header declaration has exactly the Rust types.

use std::collections::{BTreeMap, BTreeSet};

use super::root;

/// One exported function as written in `src/ffi/*.rs`.
#[derive(Debug)]
pub struct RustFn {
    pub name: String,
    pub params: Vec<(String, String)>,
    pub ret: String,
}

/// The Rust side of the ABI: exports, constants, `#[repr(C)]` structs, callback typedefs.
#[derive(Default)]
pub struct RustAbi {
    pub functions: Vec<RustFn>,
    pub consts: BTreeMap<String, i64>,
    pub structs: Vec<(String, Vec<(String, String)>)>,
    pub callbacks: Vec<(String, Vec<String>, String)>,
}

fn ffi_sources() -> String {
    let dir = root().join("src/ffi");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("src/ffi")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Splits at commas outside parentheses and angle brackets.
fn split_top(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    let mut prev = ' ';
    for c in s.chars() {
        match c {
            '(' | '<' => depth += 1,
            ')' => depth -= 1,
            '>' if prev != '-' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut cur));
                prev = c;
                continue;
            }
            _ => {}
        }
        cur.push(c);
        prev = c;
    }
    parts.push(cur);
    parts
        .into_iter()
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect()
}

/// `(params) -> ret` starting at `s` (which begins with `(`): the parameter text and the return
/// type text (up to `stop`).
fn signature(s: &str, stop: char) -> (String, String) {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    let params = s[1..i].to_string();
                    let rest = &s[i + 1..];
                    let end = rest.find(stop).expect("end of signature");
                    let ret = rest[..end]
                        .trim()
                        .trim_start_matches("->")
                        .trim()
                        .to_string();
                    return (params, ret);
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced signature: {s}")
}

pub fn parse_rust_abi() -> RustAbi {
    let src = ffi_sources();
    let mut abi = RustAbi::default();
    let lines: Vec<&str> = src.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("fn sseloop_") {
            let text = lines[i..].join("\n");
            let open = text.find('(').unwrap();
            let name = format!("sseloop_{}", &rest[..rest.find('(').unwrap()]);
            let (params, ret) = signature(&text[open..], '{');
            let params = split_top(&params)
                .into_iter()
                .map(|p| {
                    let (n, ty) = p.split_once(':').expect("name: type");
                    (n.trim().to_string(), ty.trim().to_string())
                })
                .collect();
            abi.functions.push(RustFn { name, params, ret });
        } else if let Some(rest) = t.strip_prefix("pub const SSELOOP_") {
            let (name, value) = rest.split_once(':').unwrap();
            let value = value
                .split('=')
                .nth(1)
                .unwrap()
                .trim()
                .trim_end_matches(';');
            abi.consts
                .insert(format!("SSELOOP_{name}"), value.parse().expect("integer"));
        } else if t == "#[repr(C)]" {
            let decl = lines[i + 1..]
                .iter()
                .map(|l| l.trim())
                .find(|l| l.starts_with("pub struct"))
                .unwrap();
            let name = decl["pub struct ".len()..]
                .trim_end_matches(" {")
                .to_string();
            let start = lines.iter().position(|l| l.trim() == decl).unwrap();
            let fields = lines[start + 1..]
                .iter()
                .map(|l| l.trim())
                .take_while(|l| *l != "}")
                .filter_map(|l| l.strip_prefix("pub "))
                .map(|l| {
                    let (n, ty) = l.split_once(':').unwrap();
                    (n.to_string(), ty.trim().trim_end_matches(',').to_string())
                })
                .collect();
            abi.structs.push((name, fields));
        } else if let Some(rest) = t.strip_prefix("pub type sseloop_") {
            let text = lines[i..].join(" ");
            let end = text.find(';').unwrap();
            let decl = &text[..end];
            let name = format!("sseloop_{}", rest.split_whitespace().next().unwrap());
            let fn_at = decl.find("fn(").expect("callback type");
            let (params, ret) = signature(&format!("{}\u{0}", &decl[fn_at + 2..]), '\u{0}');
            let ret = ret.trim_end_matches('>').trim().to_string();
            abi.callbacks.push((name, split_top(&params), ret));
        }
    }
    abi
}

/// The C spelling of a Rust FFI type (east-const, so nesting composes).
fn c_type(rust: &str) -> String {
    let t = rust.trim();
    if let Some(inner) = t.strip_prefix("*const ") {
        return format!("{} const *", c_type(inner));
    }
    if let Some(inner) = t.strip_prefix("*mut ") {
        return format!("{} *", c_type(inner));
    }
    match t {
        "" | "()" => "void".into(),
        "c_int" | "i32" => "int".into(),
        "c_char" => "char".into(),
        "c_void" => "void".into(),
        "usize" => "size_t".into(),
        "u64" => "uint64_t".into(),
        "u32" => "uint32_t".into(),
        "u16" => "uint16_t".into(),
        name if name.starts_with("sseloop_") => name.into(),
        other => panic!("tests/ffi.rs: add a C mapping for the Rust type `{other}`"),
    }
}

/// Size and alignment of a field type on x86-64 / aarch64 Linux.
fn size_align(rust: &str) -> usize {
    let t = rust.trim();
    if t.starts_with('*') {
        return 8;
    }
    match t {
        "u64" | "usize" | "i64" => 8,
        "c_int" | "i32" | "u32" => 4,
        "u16" => 2,
        "c_char" | "u8" => 1,
        other => panic!("tests/ffi.rs: add a size for `{other}`"),
    }
}

/// Strips C comments.
fn strip_c_comments(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    loop {
        let block = rest.find("/*");
        let line = rest.find("//");
        match (block, line) {
            (Some(b), l) if l.is_none_or(|l| b < l) => {
                out.push_str(&rest[..b]);
                let end = rest[b..].find("*/").expect("unterminated comment");
                rest = &rest[b + end + 2..];
            }
            (_, Some(l)) => {
                out.push_str(&rest[..l]);
                rest = &rest[l..];
                rest = rest.find('\n').map_or("", |n| &rest[n..]);
            }
            _ => {
                out.push_str(rest);
                return out;
            }
        }
    }
}

/// Function names declared in the header, and its integer constants.
pub fn parse_header(text: &str) -> (BTreeSet<String>, BTreeMap<String, i64>) {
    let code = strip_c_comments(text);
    let mut functions = BTreeSet::new();
    for stmt in code.split(';') {
        let stmt = stmt.trim();
        let stmt = stmt
            .rsplit('\n')
            .take_while(|l| !l.trim_start().starts_with('#'));
        let stmt = stmt
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join(" ");
        let stmt = stmt.trim();
        if stmt.starts_with("typedef") || stmt.contains('{') || stmt.contains('}') {
            continue;
        }
        if let Some(paren) = stmt.find('(') {
            let head = stmt[..paren].trim_end();
            let name = head
                .rsplit(|c: char| !(c.is_alphanumeric() || c == '_'))
                .next()
                .unwrap();
            if name.starts_with("sseloop_") {
                functions.insert(name.to_string());
            }
        }
    }
    let mut consts = BTreeMap::new();
    for token in code.split([',', '\n', '{', '}']) {
        let t = token.trim();
        if let Some(rest) = t.strip_prefix("#define SSELOOP_") {
            let mut it = rest.split_whitespace();
            let name = it.next().unwrap();
            if let Some(Ok(v)) = it.next().map(str::parse::<i64>) {
                consts.insert(format!("SSELOOP_{name}"), v);
            }
        } else if t.starts_with("SSELOOP_") {
            if let Some((name, value)) = t.split_once('=') {
                consts.insert(
                    name.trim().to_string(),
                    value.trim().parse().expect("value"),
                );
            }
        }
    }
    (functions, consts)
}

/// C code that fails to compile (with -Werror) when a declaration in the header differs from
/// the Rust signature, a struct field's type or offset differs, or a callback typedef differs.
pub fn abi_check_source(abi: &RustAbi) -> String {
    let mut c = String::from(
        "/* Generated by tests/ffi.rs from the sources in src/ffi/. */\n#include <stddef.h>\n\
         #include <stdint.h>\n#include \"sseloop.h\"\n\nvoid sseloop_abi_check(void);\n\
         void sseloop_abi_check(void) {\n",
    );
    for f in &abi.functions {
        let params: Vec<String> = f.params.iter().map(|(_, t)| c_type(t)).collect();
        let params = if params.is_empty() {
            "void".to_string()
        } else {
            params.join(", ")
        };
        c.push_str(&format!(
            "    {{ {} (*p)({params}) = {}; (void)p; }}\n",
            c_type(&f.ret),
            f.name
        ));
    }
    for (name, params, ret) in &abi.callbacks {
        let params: Vec<String> = params.iter().map(|t| c_type(t)).collect();
        c.push_str(&format!(
            "    {{ {name} h = 0; {} (*p)({}) = h; (void)p; }}\n",
            c_type(ret),
            params.join(", ")
        ));
    }
    c.push_str("}\n\n");
    for (name, fields) in &abi.structs {
        let mut offset: usize = 0;
        let mut align: usize = 1;
        for (field, ty) in fields {
            let size = size_align(ty);
            offset = offset.div_ceil(size) * size;
            align = align.max(size);
            c.push_str(&format!(
                "_Static_assert(offsetof({name}, {field}) == {offset}, \
                 \"{name}.{field} offset\");\n\
                 _Static_assert(_Generic((({name} *)0)->{field}, {}: 1, default: 0), \
                 \"{name}.{field} type\");\n",
                c_type(ty)
            ));
            offset += size;
        }
        let size = offset.div_ceil(align) * align;
        c.push_str(&format!(
            "_Static_assert(sizeof({name}) == {size}, \"{name} size\");\n"
        ));
    }
    for (name, value) in &abi.consts {
        c.push_str(&format!(
            "_Static_assert({name} == {value}, \"{name} value\");\n"
        ));
    }
    c
}
