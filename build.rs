//! Generates the public C headers with cbindgen:
//!
//! * `usbmuxd.h` from `src/ffi/mod.rs` and the modules it declares (the C types of
//!   `src/ffi/types.rs` and the exported `extern "C"` functions), config `cbindgen.toml`;
//! * `usbmuxd-proto.h` from `src/ffi/proto_types.rs` alone, config `cbindgen-proto.toml`.
//!
//! Both are always written to `$OUT_DIR/include/` (the Makefile's drift check compares
//! those with the committed copies) and copied into `include/` of the source tree when
//! their content differs, so a normal build keeps the committed headers current without
//! touching unchanged files.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

const HEADERS: [(&str, &str, &str); 2] = [
    // (output file, input, cbindgen config)
    ("usbmuxd.h", "src/ffi/mod.rs", "cbindgen.toml"),
    ("usbmuxd-proto.h", "src/ffi/proto_types.rs", "cbindgen-proto.toml"),
];

fn main() {
    let root = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR")).join("include");

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/ffi");
    for (_, _, config) in HEADERS {
        println!("cargo:rerun-if-changed={config}");
    }

    fs::create_dir_all(&out_dir).unwrap_or_else(|e| panic!("creating {}: {e}", out_dir.display()));
    for (name, input, config) in HEADERS {
        let text = generate(&root, input, config);
        let generated = out_dir.join(name);
        write_if_changed(&generated, &text).unwrap_or_else(|e| panic!("writing {}: {e}", generated.display()));

        // Refresh the committed copy. A read-only source tree (e.g. a vendored crate)
        // is not an error: the build itself does not need the header.
        let committed = root.join("include").join(name);
        match fs::create_dir_all(root.join("include")).and_then(|_| write_if_changed(&committed, &text)) {
            Ok(true) => {
                println!("cargo:warning=include/{name} updated from the Rust sources (make sure it is committed)")
            }
            Ok(false) => {}
            Err(e) => println!("cargo:warning=could not update include/{name}: {e}"),
        }
    }
}

fn generate(root: &Path, input: &str, config: &str) -> String {
    let config_path = root.join(config);
    let mut cfg =
        cbindgen::Config::from_file(&config_path).unwrap_or_else(|e| panic!("reading {}: {e}", config_path.display()));
    if let Some(after) = cfg.after_includes.take() {
        cfg.after_includes = Some(substitute(root, &after));
    }

    let bindings = cbindgen::Builder::new()
        .with_config(cfg)
        .with_src(root.join(input))
        .generate()
        .unwrap_or_else(|e| panic!("cbindgen failed on {input} ({config}): {e}"));
    let mut buf = Vec::new();
    bindings.write(&mut buf);
    tidy_typedefs(&String::from_utf8(buf).expect("cbindgen output is UTF-8"))
}

/// Makes the cbindgen output read like the upstream header:
///
/// * a struct declared as `typedef struct X {...} X;` is referred to as plain `X`
///   (cbindgen writes `struct X` everywhere, which means the same thing);
/// * enums are declared as plain `enum X {...};` with no typedef name, as upstream
///   does (the API always spells them `enum X`);
/// * no comma after the last enumerator and no `//` comment outside C++-only
///   blocks, so the headers stay valid C89/C++98 even with `-pedantic`.
fn tidy_typedefs(text: &str) -> String {
    let mut out = text
        .replace("#endif // __cplusplus\n", "#endif /* __cplusplus */\n")
        .replace("#endif  // __cplusplus\n", "#endif /* __cplusplus */\n")
        .replace("}  // extern \"C\"\n", "} /* extern \"C\" */\n");
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("typedef struct ").and_then(|l| l.strip_suffix(" {")) {
            out = out
                .replace(&format!("struct {name} "), &format!("{name} "))
                .replace(&format!("typedef {name} {{"), &format!("typedef struct {name} {{"));
        } else if let Some(name) = line.strip_prefix("typedef enum ").and_then(|l| l.strip_suffix(" {")) {
            out = out
                .replace(&format!("typedef enum {name} {{"), &format!("enum {name} {{"))
                .replace(&format!("\n}} {name};\n"), "\n};\n");
        }
    }
    out.replace(",\n};\n", "\n};\n")
}

/// Replaces `@USBMUXD_SOCKET_FILE@` (used in a hand-written conditional that cbindgen
/// cannot express) with the value of the Rust constant of that name, so the path has a
/// single source of truth.
fn substitute(root: &Path, text: &str) -> String {
    const KEY: &str = "@USBMUXD_SOCKET_FILE@";
    if !text.contains(KEY) {
        return text.to_owned();
    }
    let src_path = root.join("src/ffi/proto_types.rs");
    let src = fs::read_to_string(&src_path).unwrap_or_else(|e| panic!("reading {}: {e}", src_path.display()));
    let value = src
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("pub const USBMUXD_SOCKET_FILE: &str = \""))
        .find_map(|rest| rest.strip_suffix("\";"))
        .unwrap_or_else(|| panic!("{}: no `pub const USBMUXD_SOCKET_FILE: &str = \"...\";`", src_path.display()));
    assert!(!value.contains(['\\', '"']), "USBMUXD_SOCKET_FILE must be a plain string without escapes");
    text.replace(KEY, value)
}

/// Writes `text` to `path` unless it already has exactly that content; returns whether
/// it wrote. Writes via a temporary file and rename so readers never see half a file.
fn write_if_changed(path: &Path, text: &str) -> std::io::Result<bool> {
    if fs::read(path).map(|old| old == text.as_bytes()).unwrap_or(false) {
        return Ok(false);
    }
    let tmp = path.with_extension(format!("h.tmp{}", std::process::id()));
    fs::write(&tmp, text)?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(true)
}
