//! CPU metering for Kefu's plugins, as a build step.
//!
//! Neither Workers nor Spin can preempt wasm that is stuck in a loop inside one request: a
//! wall-clock timer only fires once the plugin yields, which a loop never does. So every
//! plugin's core module is rewritten before it becomes a component (`make plugins`: cargo
//! build, then [`meter`], then `jco new`) to carry its own allowance:
//!
//! - a new mutable `i64` global starts at the budget (in *units*, below);
//! - at every function entry and at the head of every `loop` the allowance drops by the cost
//!   of the code that follows, up to the next loop head or the end of the function;
//! - when it goes negative the module executes `i64.div_u` by zero.
//!
//! **The unit** is one wasm instruction of the function or loop body being entered (nested
//! loops are charged when they are entered, each iteration at its own head). Both arms of an
//! `if` are charged, so a unit is an upper bound on instructions executed, never fewer.
//!
//! **The trap convention.** Rust never emits a division that can trap (it checks the divisor
//! and panics with a message first), so a wasm "divide by zero" trap from a Rust plugin means
//! one thing: the allowance ran out. Hosts map it to `FailureKind::Timeout`, and every other
//! trap to `FailureKind::Trap`. A plugin written in a language that lets integer division
//! trap would see its own division by zero reported as a timeout; nothing worse.
//!
//! The allowance lives in the instance, so hosts give every hook call a fresh instance: each
//! call starts with the whole budget.

use anyhow::{Context, Result, bail};
use wasm_encoder::reencode::{self, Reencode};
use wasm_encoder::{ConstExpr, GlobalType, Instruction, SectionId, ValType};
use wasmparser::{Operator, Parser, Payload, Validator, WasmFeatures};

/// The allowance a metered module starts each instance with, in units (about one wasm
/// instruction each; see `README.md` for what that is in time).
pub const DEFAULT_BUDGET: u64 = 50_000_000;

/// Rewrites the core module `wasm` so that it traps with "divide by zero" once it has run
/// `budget` units of code. The result is validated before it is returned.
pub fn meter(wasm: &[u8], budget: u64) -> Result<Vec<u8>> {
    let budget = i64::try_from(budget).context("the budget must fit in an i64")?;
    let features = WasmFeatures::default();
    Validator::new_with_features(features)
        .validate_all(wasm)
        .context("the input is not a valid core wasm module")?;
    let (imported_globals, defined_globals, has_globals) = count_globals(wasm)?;
    let mut meter = Meter {
        allowance: imported_globals + defined_globals,
        budget,
        global_written: false,
        has_globals,
    };
    let mut module = wasm_encoder::Module::new();
    meter
        .parse_core_module(&mut module, Parser::new(0), wasm)
        .map_err(|e| anyhow::anyhow!("rewriting the module: {e}"))?;
    let out = module.finish();
    Validator::new_with_features(features)
        .validate_all(&out)
        .context("the metered module does not validate (a bug in the meter)")?;
    Ok(out)
}

/// Imported globals, defined globals, and whether there is a global section at all.
fn count_globals(wasm: &[u8]) -> Result<(u32, u32, bool)> {
    let (mut imported, mut defined, mut section) = (0, 0, false);
    for payload in Parser::new(0).parse_all(wasm) {
        match payload? {
            Payload::Version {
                encoding: wasmparser::Encoding::Component,
                ..
            } => bail!("this is a component; meter the core module before `jco new`"),
            Payload::ImportSection(imports) => {
                for import in imports.into_imports() {
                    if matches!(import?.ty, wasmparser::TypeRef::Global(_)) {
                        imported += 1;
                    }
                }
            }
            Payload::GlobalSection(globals) => {
                section = true;
                defined = globals.count();
            }
            _ => {}
        }
    }
    Ok((imported, defined, section))
}

struct Meter {
    /// The allowance global's index (after every existing global, so none is renumbered).
    allowance: u32,
    budget: i64,
    /// Whether the allowance global has been written into a global section yet.
    global_written: bool,
    has_globals: bool,
}

impl Meter {
    fn allowance_global(&self) -> (GlobalType, ConstExpr) {
        (
            GlobalType {
                val_type: ValType::I64,
                mutable: true,
                shared: false,
            },
            ConstExpr::i64_const(self.budget),
        )
    }

    /// Charges `cost` units, trapping (divide by zero) when the allowance goes negative.
    fn charge(&self, f: &mut wasm_encoder::Function, cost: u64) {
        let g = self.allowance;
        f.instruction(&Instruction::GlobalGet(g));
        f.instruction(&Instruction::I64Const(cost.min(i64::MAX as u64) as i64));
        f.instruction(&Instruction::I64Sub);
        f.instruction(&Instruction::GlobalSet(g));
        f.instruction(&Instruction::GlobalGet(g));
        f.instruction(&Instruction::I64Const(0));
        f.instruction(&Instruction::I64LtS);
        f.instruction(&Instruction::If(wasm_encoder::BlockType::Empty));
        // The trap hosts recognise as "allowance exhausted" (see the module docs).
        f.instruction(&Instruction::I64Const(1));
        f.instruction(&Instruction::I64Const(0));
        f.instruction(&Instruction::I64DivU);
        f.instruction(&Instruction::Drop);
        f.instruction(&Instruction::End);
    }
}

/// The position of a section in a module's required order (`SectionId`'s numbers are not:
/// tags come before globals, the data count before code).
fn rank(id: SectionId) -> u8 {
    match id {
        SectionId::Custom => 0,
        SectionId::Type => 1,
        SectionId::Import => 2,
        SectionId::Function => 3,
        SectionId::Table => 4,
        SectionId::Memory => 5,
        SectionId::Tag => 6,
        SectionId::Global => 7,
        SectionId::Export => 8,
        SectionId::Start => 9,
        SectionId::Element => 10,
        SectionId::DataCount => 11,
        SectionId::Code => 12,
        SectionId::Data => 13,
    }
}

/// The cost of each metered region of a function body, in the order their charges are
/// emitted: the function's own body first, then each `loop` in the order it opens. A region's
/// cost is the number of instructions directly in it (a nested loop's body is its own region).
fn region_costs(ops: &[Operator<'_>]) -> Vec<u64> {
    // Open control frames: `Some(region)` for a loop, `None` for a block, if or try.
    let mut frames: Vec<Option<usize>> = Vec::new();
    let mut current = vec![0usize];
    let mut costs = vec![0u64];
    for op in ops {
        let region = *current.last().unwrap_or(&0);
        costs[region] += 1;
        match op {
            Operator::Loop { .. } => {
                costs.push(0);
                current.push(costs.len() - 1);
                frames.push(Some(costs.len() - 1));
            }
            Operator::Block { .. }
            | Operator::If { .. }
            | Operator::Try { .. }
            | Operator::TryTable { .. } => frames.push(None),
            // `delegate` closes a (legacy) `try` the way `end` closes other frames.
            Operator::End | Operator::Delegate { .. } => {
                if let Some(Some(_)) = frames.pop() {
                    current.pop();
                }
            }
            _ => {}
        }
    }
    costs
}

impl Reencode for Meter {
    type Error = std::convert::Infallible;

    fn parse_global_section(
        &mut self,
        globals: &mut wasm_encoder::GlobalSection,
        section: wasmparser::GlobalSectionReader<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        reencode::utils::parse_global_section(self, globals, section)?;
        let (ty, init) = self.allowance_global();
        globals.global(ty, &init);
        self.global_written = true;
        Ok(())
    }

    fn intersperse_section_hook(
        &mut self,
        module: &mut wasm_encoder::Module,
        _after: Option<SectionId>,
        before: Option<SectionId>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        // A module without globals gets a global section at its place in the order.
        if !self.has_globals
            && !self.global_written
            && before.is_none_or(|b| rank(b) > rank(SectionId::Global))
        {
            let mut globals = wasm_encoder::GlobalSection::new();
            let (ty, init) = self.allowance_global();
            globals.global(ty, &init);
            module.section(&globals);
            self.global_written = true;
        }
        Ok(())
    }

    fn parse_function_body(
        &mut self,
        code: &mut wasm_encoder::CodeSection,
        body: wasmparser::FunctionBody<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        let mut f = self.new_function_with_parsed_locals(&body)?;
        let mut reader = body.get_operators_reader()?;
        let mut ops = Vec::new();
        while !reader.eof() {
            ops.push(reader.read()?);
        }
        let costs = region_costs(&ops);
        let mut next_region = 0;
        self.charge(&mut f, costs[next_region]);
        for op in ops {
            let is_loop = matches!(op, Operator::Loop { .. });
            let instruction = self.instruction(op)?;
            f.instruction(&instruction);
            if is_loop {
                // Charged inside the loop, so every branch back to its head pays again.
                next_region += 1;
                self.charge(&mut f, costs[next_region]);
            }
        }
        code.function(&f);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_encoder::{
        BlockType, CodeSection, EntityType, ExportKind, ExportSection, Function, FunctionSection,
        GlobalSection, ImportSection, Module, TypeSection,
    };

    /// A module with `spin()` (loops forever) and `count(n) -> n` (loops n times); with
    /// `globals`, it also imports one global and defines one, and `count` reads the defined one
    /// (so a renumbered global would show).
    fn fixture(globals: bool) -> Vec<u8> {
        let mut module = Module::new();
        let mut types = TypeSection::new();
        types.ty().function([], []);
        types.ty().function([ValType::I32], [ValType::I32]);
        module.section(&types);
        if globals {
            let mut imports = ImportSection::new();
            imports.import(
                "env",
                "base",
                EntityType::Global(GlobalType {
                    val_type: ValType::I32,
                    mutable: false,
                    shared: false,
                }),
            );
            module.section(&imports);
        }
        let mut functions = FunctionSection::new();
        functions.function(0);
        functions.function(1);
        module.section(&functions);
        if globals {
            let mut section = GlobalSection::new();
            section.global(
                GlobalType {
                    val_type: ValType::I32,
                    mutable: true,
                    shared: false,
                },
                &ConstExpr::i32_const(0),
            );
            module.section(&section);
        }
        let mut exports = ExportSection::new();
        exports.export("spin", ExportKind::Func, 0);
        exports.export("count", ExportKind::Func, 1);
        module.section(&exports);
        let mut code = CodeSection::new();
        let mut spin = Function::new([]);
        spin.instruction(&Instruction::Loop(BlockType::Empty))
            .instruction(&Instruction::Br(0))
            .instruction(&Instruction::End)
            .instruction(&Instruction::End);
        code.function(&spin);
        // i = 0; loop { if i == n break; i += 1 }; return i (+ the defined global, which is 0)
        let mut count = Function::new([(1, ValType::I32)]);
        count
            .instruction(&Instruction::Block(BlockType::Empty))
            .instruction(&Instruction::Loop(BlockType::Empty))
            .instruction(&Instruction::LocalGet(1))
            .instruction(&Instruction::LocalGet(0))
            .instruction(&Instruction::I32Eq)
            .instruction(&Instruction::BrIf(1))
            .instruction(&Instruction::LocalGet(1))
            .instruction(&Instruction::I32Const(1))
            .instruction(&Instruction::I32Add)
            .instruction(&Instruction::LocalSet(1))
            .instruction(&Instruction::Br(0))
            .instruction(&Instruction::End)
            .instruction(&Instruction::End)
            .instruction(&Instruction::LocalGet(1));
        if globals {
            count
                .instruction(&Instruction::GlobalGet(1))
                .instruction(&Instruction::I32Add);
        }
        count.instruction(&Instruction::End);
        code.function(&count);
        module.section(&code);
        module.finish()
    }

    fn globals_of(wasm: &[u8]) -> Vec<wasmparser::Global<'_>> {
        Parser::new(0)
            .parse_all(wasm)
            .filter_map(|p| match p.unwrap() {
                Payload::GlobalSection(s) => {
                    Some(s.into_iter().map(|g| g.unwrap()).collect::<Vec<_>>())
                }
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[test]
    fn metered_modules_validate_and_keep_their_globals() {
        for with_globals in [false, true] {
            let metered = meter(&fixture(with_globals), 1234).unwrap();
            Validator::new().validate_all(&metered).unwrap();
            let globals = globals_of(&metered);
            let allowance = globals.last().unwrap();
            assert!(allowance.ty.mutable && allowance.ty.content_type == wasmparser::ValType::I64);
            let mut init = allowance.init_expr.get_operators_reader();
            assert!(matches!(
                init.read().unwrap(),
                Operator::I64Const { value: 1234 }
            ));
            // Existing globals stay where they were: the allowance comes after them all.
            assert_eq!(globals.len(), if with_globals { 2 } else { 1 });
            let (imported, defined, _) = count_globals(&metered).unwrap();
            let index = imported + defined - 1;
            let first_op = Parser::new(0)
                .parse_all(&metered)
                .find_map(|p| match p.unwrap() {
                    Payload::CodeSectionEntry(body) => Some(format!(
                        "{:?}",
                        body.get_operators_reader().unwrap().read().unwrap()
                    )),
                    _ => None,
                })
                .unwrap();
            assert_eq!(first_op, format!("GlobalGet {{ global_index: {index} }}"));
        }
        assert!(
            meter(b"\0asm\x0d\0\x01\0", 1).is_err(),
            "a component is refused"
        );
        assert!(meter(b"not wasm", 1).is_err());
    }

    #[test]
    fn each_region_is_charged_for_its_own_instructions() {
        let wasm = fixture(false);
        let bodies: Vec<Vec<Operator<'_>>> = Parser::new(0)
            .parse_all(&wasm)
            .filter_map(|p| match p.unwrap() {
                Payload::CodeSectionEntry(body) => Some(
                    body.get_operators_reader()
                        .unwrap()
                        .into_iter()
                        .map(|o| o.unwrap())
                        .collect(),
                ),
                _ => None,
            })
            .collect();
        // spin: `loop` and the final `end` in the function, `br 0` and its `end` in the loop.
        assert_eq!(region_costs(&bodies[0]), vec![2, 2]);
        // count: block, loop, end, local.get, end in the function; 10 in the loop.
        assert_eq!(region_costs(&bodies[1]), vec![5, 10]);
    }

    /// Runs the metered fixture on Node's WebAssembly (V8, as in workerd): what a host sees.
    fn run_on_node(wasm: &[u8], calls: &str) -> String {
        let dir = std::env::temp_dir().join(format!("kefu-meter-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}.wasm", calls.len()));
        std::fs::write(&path, wasm).unwrap();
        let script = format!(
            "const m = new WebAssembly.Module(require('fs').readFileSync({path:?}));\n\
             const out = [];\n\
             for (const [f, arg] of {calls}) {{\n\
               const {{ exports: e }} = new WebAssembly.Instance(m, {{ env: {{ base: 7 }} }});\n\
               try {{ out.push(String(e[f](arg))); }}\n\
               catch (err) {{ out.push(err.constructor.name + ': ' + err.message); }}\n\
             }}\n\
             console.log(out.join('\\n'));"
        );
        let output = std::process::Command::new("node")
            .args(["-e", &script])
            .output()
            .expect("node (Node.js 20 or newer) runs the metered module");
        std::fs::remove_file(&path).ok();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    #[test]
    fn a_loop_runs_until_its_allowance_is_spent_then_traps_as_divide_by_zero() {
        // count(n) costs 7 units (the function) + 10 per loop head, which it passes n + 1 times.
        // Each call gets a fresh instance, as hosts do, so each starts with the whole budget.
        let metered = meter(&fixture(true), 7 + 10 * 1001).unwrap();
        let out = run_on_node(&metered, r#"[["count", 1000], ["count", 1001], ["spin"]]"#);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0], "1000",
            "within the allowance the result is unchanged"
        );
        assert_eq!(
            lines[1], "RuntimeError: divide by zero",
            "one more iteration is over"
        );
        assert_eq!(
            lines[2], "RuntimeError: divide by zero",
            "an endless loop is cut off"
        );
    }
}
