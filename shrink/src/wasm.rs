//! The names a WebAssembly module shares with its JS glue: the module and field name of each
//! import (section 2) and the name of each export (section 7). [`rename`] rewrites them and
//! copies every other byte as it is.

use anyhow::{bail, ensure, Context, Result};

/// One name in the module, as [`rename`] offers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name<'a> {
    /// The module an import comes from (`"./x_bg.js"` in wasm-bindgen's output).
    ImportModule(&'a str),
    /// The name of an import within its module.
    ImportField(&'a str),
    /// The name of an export.
    Export(&'a str),
}

/// Every name of the module, in the order they stand.
pub fn names(module: &[u8]) -> Result<Vec<Name<'_>>> {
    let mut found = Vec::new();
    walk(module, &mut |name| {
        found.push(name);
        None
    })?;
    Ok(found)
}

/// The module with each name for which `new_name` answers `Some` renamed to that.
pub fn rename<'m>(
    module: &'m [u8],
    mut new_name: impl FnMut(Name<'m>) -> Option<String>,
) -> Result<Vec<u8>> {
    walk(module, &mut new_name)
}

const MAGIC: &[u8] = b"\0asm\x01\0\0\0";
const IMPORTS: u8 = 2;
const EXPORTS: u8 = 7;

fn walk<'m>(
    module: &'m [u8],
    new_name: &mut dyn FnMut(Name<'m>) -> Option<String>,
) -> Result<Vec<u8>> {
    ensure!(
        module.starts_with(MAGIC),
        "not a WebAssembly module (version 1)"
    );
    let mut out = MAGIC.to_vec();
    let mut reader = Reader {
        bytes: module,
        at: MAGIC.len(),
    };
    while !reader.done() {
        let id = reader.byte()?;
        let size = reader.u32()? as usize;
        let body = reader.take(size).context("a section runs past the end")?;
        let body = match id {
            IMPORTS => imports(body, new_name)?,
            EXPORTS => exports(body, new_name)?,
            _ => body.to_vec(),
        };
        out.push(id);
        write_u32(&mut out, u32::try_from(body.len())?);
        out.extend_from_slice(&body);
    }
    Ok(out)
}

fn imports<'m>(
    body: &'m [u8],
    new_name: &mut dyn FnMut(Name<'m>) -> Option<String>,
) -> Result<Vec<u8>> {
    entries(body, "import", |reader, out| {
        let module = reader.name()?;
        write_name(
            out,
            new_name(Name::ImportModule(module))
                .as_deref()
                .unwrap_or(module),
        );
        let field = reader.name()?;
        write_name(
            out,
            new_name(Name::ImportField(field))
                .as_deref()
                .unwrap_or(field),
        );
        // What is imported (function, table, memory, global, tag), copied as it is.
        let start = reader.at;
        match reader.byte()? {
            0x00 => drop(reader.u32()?),
            0x01 => {
                reader.byte()?;
                reader.limits()?;
            }
            0x02 => reader.limits()?,
            0x03 => drop(reader.take(2)?),
            0x04 => {
                reader.byte()?;
                reader.u32()?;
            }
            kind => bail!("an import of unknown kind {kind:#x}"),
        }
        out.extend_from_slice(&body[start..reader.at]);
        Ok(())
    })
}

fn exports<'m>(
    body: &'m [u8],
    new_name: &mut dyn FnMut(Name<'m>) -> Option<String>,
) -> Result<Vec<u8>> {
    entries(body, "export", |reader, out| {
        let name = reader.name()?;
        write_name(out, new_name(Name::Export(name)).as_deref().unwrap_or(name));
        // Its kind and index, copied as they are.
        let start = reader.at;
        reader.byte()?;
        reader.u32()?;
        out.extend_from_slice(&body[start..reader.at]);
        Ok(())
    })
}

/// A section that is a vector of entries (`what`s): its count, then each entry as
/// `entry` reads it from the reader and writes it out; nothing may follow the last.
fn entries<'m>(
    body: &'m [u8],
    what: &str,
    mut entry: impl FnMut(&mut Reader<'m>, &mut Vec<u8>) -> Result<()>,
) -> Result<Vec<u8>> {
    let mut reader = Reader { bytes: body, at: 0 };
    let mut out = Vec::with_capacity(body.len());
    let count = reader.u32()?;
    write_u32(&mut out, count);
    for _ in 0..count {
        entry(&mut reader, &mut out)?;
    }
    ensure!(reader.done(), "bytes after the last {what}");
    Ok(out)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn byte(&mut self) -> Result<u8> {
        let byte = *self.bytes.get(self.at).context("the module ends early")?;
        self.at += 1;
        Ok(byte)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len());
        let slice = &self.bytes[self.at..end.context("the module ends early")?];
        self.at += n;
        Ok(slice)
    }

    /// An unsigned LEB128 number of up to 64 bits.
    fn u64(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        bail!("a number longer than 64 bits")
    }

    fn u32(&mut self) -> Result<u32> {
        u32::try_from(self.u64()?).context("a number longer than 32 bits")
    }

    fn name(&mut self) -> Result<&'a str> {
        let len = self.u32()? as usize;
        std::str::from_utf8(self.take(len)?).context("a name that is not UTF-8")
    }

    /// A table's or memory's limits: flags (bit 0: a maximum follows), minimum, maximum.
    fn limits(&mut self) -> Result<()> {
        let flags = self.byte()?;
        self.u64()?;
        if flags & 1 != 0 {
            self.u64()?;
        }
        Ok(())
    }
}

fn write_u32(out: &mut Vec<u8>, mut value: u32) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn write_name(out: &mut Vec<u8>, name: &str) {
    // A name's length is a u32 by the format; names here are far shorter.
    write_u32(out, name.len() as u32);
    out.extend_from_slice(name.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module importing a function and a memory from "env" and exporting a function, with
    /// a type section and a custom section around them, as a toolchain lays them out.
    fn module(env: &str, import: &str, export: &str) -> Vec<u8> {
        let mut imports = vec![2];
        write_name(&mut imports, env);
        write_name(&mut imports, import);
        imports.extend([0x00, 0x00]);
        write_name(&mut imports, env);
        write_name(&mut imports, "memory");
        imports.extend([0x02, 0x01, 0x01, 0x90, 0x01]);
        let mut exports = vec![1];
        write_name(&mut exports, export);
        exports.extend([0x00, 0x81, 0x01]);
        let mut out = MAGIC.to_vec();
        for (id, body) in [
            (1, vec![1, 0x60, 0, 0]),
            (IMPORTS, imports),
            (EXPORTS, exports),
            (0, b"\x04noteabc".to_vec()),
        ] {
            out.push(id);
            write_u32(&mut out, body.len() as u32);
            out.extend(body);
        }
        out
    }

    #[test]
    fn names_are_read_in_order() -> Result<()> {
        let module = module("./glue.js", "__wbg_log_0123456789abcdef", "start");
        assert_eq!(
            names(&module)?,
            [
                Name::ImportModule("./glue.js"),
                Name::ImportField("__wbg_log_0123456789abcdef"),
                Name::ImportModule("./glue.js"),
                Name::ImportField("memory"),
                Name::Export("start"),
            ]
        );
        Ok(())
    }

    #[test]
    fn a_renamed_module_is_the_module_with_other_names() -> Result<()> {
        let long = module("./glue.js", "__wbg_log_0123456789abcdef", "start");
        let short = rename(&long, |name| match name {
            Name::ImportModule(_) => Some("a".into()),
            Name::ImportField("__wbg_log_0123456789abcdef") => Some("b".into()),
            Name::Export(_) => Some("c".into()),
            Name::ImportField(_) => None,
        })?;
        assert_eq!(short, module("a", "b", "c"));
        // Nothing renamed: the same bytes.
        assert_eq!(rename(&long, |_| None)?, long);
        Ok(())
    }

    #[test]
    fn a_name_longer_than_127_bytes_takes_two_length_bytes() -> Result<()> {
        let long = "x".repeat(200);
        let module = module("env", &long, "start");
        assert_eq!(names(&module)?[1], Name::ImportField(&long));
        let short = rename(&module, |name| {
            (name == Name::ImportField(&long)).then(|| "y".into())
        })?;
        assert_eq!(short, self::module("env", "y", "start"));
        Ok(())
    }

    #[test]
    fn a_truncated_module_is_an_error() {
        let module = module("env", "f", "start");
        assert!(names(&module[..module.len() - 3]).is_err());
        assert!(names(b"\0asm\x02\0\0\0").is_err());
    }
}
