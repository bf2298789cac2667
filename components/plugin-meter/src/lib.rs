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
//! **Bulk operations** do work in proportion to an operand, so one instruction is no measure
//! of them: a `memory.fill` of 64 MiB is one instruction. Each is charged, just before it
//! runs, by its size operand as well: `memory.fill`, `memory.copy` and `memory.init` one unit
//! per [`BYTES_PER_UNIT`] bytes, `memory.grow` [`UNITS_PER_PAGE`] units a page asked for
//! (what filling the page would cost: the host commits and zeroes it), and `table.fill`,
//! `table.copy`, `table.init` and `table.grow` one unit per element. An operation the
//! allowance cannot pay for traps before it starts.
//!
//! **Memory.** Every memory the module defines or imports is given a maximum ([`Limits`]:
//! 64 MiB unless told otherwise; a smaller maximum the module declares stays). The engines
//! that run plugins (V8 on Workers, wasmtime on Spin) enforce a memory's declared maximum,
//! so `memory.grow` past it returns -1 (Rust's allocator then aborts, a trap) instead of
//! allocating. A module that starts with more than the maximum is refused. Proposals the
//! meter does not account for (64-bit, shared or custom-page-size memories, GC arrays and
//! their bulk operations, `memory.discard`) are refused when the module is read.
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
/// The largest memory a metered module may grow to, in MiB, unless told otherwise.
pub const DEFAULT_MAX_MEMORY_MIB: u32 = 64;
/// A wasm page, in bytes.
pub const PAGE_BYTES: u64 = 65_536;
/// `memory.fill`, `memory.copy` and `memory.init` cost one unit per this many bytes (roughly
/// what a CPU moves in the time of one simple instruction).
pub const BYTES_PER_UNIT: u64 = 16;
/// `memory.grow` costs this many units per page it asks for: the price of filling the page.
pub const UNITS_PER_PAGE: u64 = PAGE_BYTES / BYTES_PER_UNIT;

/// What a metered module may use in each instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The CPU allowance, in units.
    pub budget: u64,
    /// The largest every memory may grow to, in wasm pages of [`PAGE_BYTES`].
    pub max_memory_pages: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            budget: DEFAULT_BUDGET,
            max_memory_pages: mib_to_pages(DEFAULT_MAX_MEMORY_MIB),
        }
    }
}

/// `mib` MiB in wasm pages.
pub fn mib_to_pages(mib: u32) -> u32 {
    mib.saturating_mul(16)
}

/// The wasm features a plugin may use: the default set without the proposals the meter
/// does not account for (see the module docs).
fn features() -> WasmFeatures {
    WasmFeatures::default().difference(
        WasmFeatures::MEMORY64
            | WasmFeatures::THREADS
            | WasmFeatures::SHARED_EVERYTHING_THREADS
            | WasmFeatures::CUSTOM_PAGE_SIZES
            | WasmFeatures::MEMORY_CONTROL
            | WasmFeatures::GC
            | WasmFeatures::STACK_SWITCHING,
    )
}

/// Rewrites the core module `wasm` so that it traps with "divide by zero" once it has run
/// `limits.budget` units of code, and so that no memory of it grows past
/// `limits.max_memory_pages`. The result is validated before it is returned.
pub fn meter(wasm: &[u8], limits: &Limits) -> Result<Vec<u8>> {
    let budget = i64::try_from(limits.budget).context("the budget must fit in an i64")?;
    if limits.max_memory_pages == 0 || u64::from(limits.max_memory_pages) > 65_536 {
        bail!("the memory maximum must be between 1 page and 4 GiB");
    }
    let features = features();
    Validator::new_with_features(features)
        .validate_all(wasm)
        .context("the input is not a valid core wasm module, or uses a proposal the meter refuses (64-bit, shared or custom-page memories, GC, memory.discard)")?;
    let survey = survey(wasm)?;
    for initial in &survey.memory_minimums {
        if *initial > u64::from(limits.max_memory_pages) {
            bail!(
                "a memory starts with {initial} pages, over the maximum of {} pages",
                limits.max_memory_pages
            );
        }
    }
    let globals = survey.imported_globals + survey.defined_globals;
    let mut meter = Meter {
        allowance: globals,
        scratch: globals + 1,
        budget,
        max_memory_pages: u64::from(limits.max_memory_pages),
        global_written: false,
        has_globals: survey.has_global_section,
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

/// What the rewrite needs to know of a module before it starts.
struct Survey {
    imported_globals: u32,
    defined_globals: u32,
    /// Whether there is a global section at all.
    has_global_section: bool,
    /// Each memory's initial size in pages, imported and defined.
    memory_minimums: Vec<u64>,
}

fn survey(wasm: &[u8]) -> Result<Survey> {
    let mut survey = Survey {
        imported_globals: 0,
        defined_globals: 0,
        has_global_section: false,
        memory_minimums: Vec::new(),
    };
    for payload in Parser::new(0).parse_all(wasm) {
        match payload? {
            Payload::Version {
                encoding: wasmparser::Encoding::Component,
                ..
            } => bail!("this is a component; meter the core module before `jco new`"),
            Payload::ImportSection(imports) => {
                for import in imports.into_imports() {
                    match import?.ty {
                        wasmparser::TypeRef::Global(_) => survey.imported_globals += 1,
                        wasmparser::TypeRef::Memory(m) => survey.memory_minimums.push(m.initial),
                        _ => {}
                    }
                }
            }
            Payload::MemorySection(memories) => {
                for memory in memories {
                    survey.memory_minimums.push(memory?.initial);
                }
            }
            Payload::GlobalSection(globals) => {
                survey.has_global_section = true;
                survey.defined_globals = globals.count();
            }
            _ => {}
        }
    }
    Ok(survey)
}

/// How a bulk operation's size operand (on top of the stack, an `i32`) is charged, beyond
/// the operation's own unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BulkCharge {
    /// One unit per [`BYTES_PER_UNIT`] bytes.
    Bytes,
    /// [`UNITS_PER_PAGE`] units per page.
    Pages,
    /// One unit per table element.
    Elements,
}

/// Whether `op` is a bulk operation, and how its size is charged.
fn bulk_charge(op: &Operator<'_>) -> Option<BulkCharge> {
    match op {
        Operator::MemoryFill { .. } | Operator::MemoryCopy { .. } | Operator::MemoryInit { .. } => {
            Some(BulkCharge::Bytes)
        }
        Operator::MemoryGrow { .. } => Some(BulkCharge::Pages),
        Operator::TableFill { .. }
        | Operator::TableCopy { .. }
        | Operator::TableInit { .. }
        | Operator::TableGrow { .. } => Some(BulkCharge::Elements),
        _ => None,
    }
}

struct Meter {
    /// The allowance global's index (after every existing global, so none is renumbered).
    allowance: u32,
    /// A scratch `i32` global (after the allowance) that holds a bulk operation's size
    /// while it is charged; an instance runs one thread, so one global serves every function.
    scratch: u32,
    budget: i64,
    max_memory_pages: u64,
    /// Whether the allowance global has been written into a global section yet.
    global_written: bool,
    has_globals: bool,
}

impl Meter {
    /// The globals the meter adds, in order: the allowance, then the scratch.
    fn added_globals(&self, globals: &mut wasm_encoder::GlobalSection) {
        let mutable = |val_type| GlobalType {
            val_type,
            mutable: true,
            shared: false,
        };
        globals.global(mutable(ValType::I64), &ConstExpr::i64_const(self.budget));
        globals.global(mutable(ValType::I32), &ConstExpr::i32_const(0));
    }

    /// Charges `cost` units, trapping (divide by zero) when the allowance goes negative.
    fn charge(&self, f: &mut wasm_encoder::Function, cost: u64) {
        let g = self.allowance;
        f.instruction(&Instruction::GlobalGet(g));
        f.instruction(&Instruction::I64Const(cost.min(i64::MAX as u64) as i64));
        f.instruction(&Instruction::I64Sub);
        self.settle(f);
    }

    /// Charges a bulk operation for the size on top of the stack, leaving the stack as it
    /// was. Sizes are `i32` (the meter refuses 64-bit memories), so the `i64` arithmetic
    /// cannot overflow: at most 2^32 pages times [`UNITS_PER_PAGE`].
    fn charge_bulk(&self, f: &mut wasm_encoder::Function, how: BulkCharge) {
        let (g, scratch) = (self.allowance, self.scratch);
        f.instruction(&Instruction::GlobalSet(scratch));
        f.instruction(&Instruction::GlobalGet(g));
        f.instruction(&Instruction::GlobalGet(scratch));
        f.instruction(&Instruction::I64ExtendI32U);
        match how {
            BulkCharge::Bytes => {
                f.instruction(&Instruction::I64Const(
                    BYTES_PER_UNIT.trailing_zeros().into(),
                ));
                f.instruction(&Instruction::I64ShrU);
            }
            BulkCharge::Pages => {
                f.instruction(&Instruction::I64Const(UNITS_PER_PAGE as i64));
                f.instruction(&Instruction::I64Mul);
            }
            BulkCharge::Elements => {}
        }
        f.instruction(&Instruction::I64Sub);
        self.settle(f);
        f.instruction(&Instruction::GlobalGet(scratch));
    }

    /// Stores the new allowance (on the stack) and traps if it is negative.
    fn settle(&self, f: &mut wasm_encoder::Function) {
        let g = self.allowance;
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
        self.added_globals(globals);
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
            self.added_globals(&mut globals);
            module.section(&globals);
            self.global_written = true;
        }
        Ok(())
    }

    fn memory_type(
        &mut self,
        memory_ty: wasmparser::MemoryType,
    ) -> Result<wasm_encoder::MemoryType, reencode::Error<Self::Error>> {
        // Imported and defined memories alike: an imported one must then be provided with a
        // maximum no larger, which keeps the limit whoever supplies the memory.
        let mut ty = reencode::utils::memory_type(self, memory_ty);
        ty.maximum = Some(
            ty.maximum
                .map_or(self.max_memory_pages, |m| m.min(self.max_memory_pages)),
        );
        Ok(ty)
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
            if let Some(how) = bulk_charge(&op) {
                self.charge_bulk(&mut f, how);
            }
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
        BlockType, CodeSection, DataCountSection, DataSection, ElementSection, Elements,
        EntityType, ExportKind, ExportSection, Function, FunctionSection, GlobalSection,
        ImportSection, MemorySection, Module, RefType, TableSection, TableType, TypeSection,
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

    /// The default limits with `units` of CPU.
    fn budget(units: u64) -> Limits {
        Limits {
            budget: units,
            ..Limits::default()
        }
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
            let metered = meter(&fixture(with_globals), &budget(1234)).unwrap();
            Validator::new().validate_all(&metered).unwrap();
            let globals = globals_of(&metered);
            let allowance = &globals[globals.len() - 2];
            assert!(allowance.ty.mutable && allowance.ty.content_type == wasmparser::ValType::I64);
            let mut init = allowance.init_expr.get_operators_reader();
            assert!(matches!(
                init.read().unwrap(),
                Operator::I64Const { value: 1234 }
            ));
            let scratch = globals.last().unwrap();
            assert!(scratch.ty.mutable && scratch.ty.content_type == wasmparser::ValType::I32);
            // Existing globals stay where they were: the meter's come after them all.
            assert_eq!(globals.len(), if with_globals { 3 } else { 2 });
            let survey = survey(&metered).unwrap();
            let index = survey.imported_globals + survey.defined_globals - 2;
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
            meter(b"\0asm\x0d\0\x01\0", &budget(1)).is_err(),
            "a component is refused"
        );
        assert!(meter(b"not wasm", &budget(1)).is_err());
    }

    #[test]
    fn each_region_is_charged_for_its_own_instructions() {
        let wasm = fixture(false);
        let bodies = bodies_of(&wasm);
        // spin: `loop` and the final `end` in the function, `br 0` and its `end` in the loop.
        assert_eq!(region_costs(&bodies[0]), vec![2, 2]);
        // count: block, loop, end, local.get, end in the function; 10 in the loop.
        assert_eq!(region_costs(&bodies[1]), vec![5, 10]);
    }

    /// Runs the metered fixture on Node's WebAssembly (V8, as in workerd): what a host sees.
    fn run_on_node(wasm: &[u8], calls: &str) -> String {
        let dir = std::env::temp_dir().join(format!("kefu-meter-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Tests run in parallel: each run gets a file of its own.
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("{run}.wasm"));
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
        let metered = meter(&fixture(true), &budget(7 + 10 * 1001)).unwrap();
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

    /// A module with one memory (2 pages at first; `max` pages at most, if given), a table and
    /// passive segments, exporting (each `(i32) -> i32`):
    /// - `fill(n)`: `memory.fill`s 64 KiB, `n` times, and returns `n`;
    /// - `copy(n)`: `memory.copy`s 64 KiB, `n` times, and returns `n`;
    /// - `grow(pages)`: `memory.grow(pages)` (the old size in pages, or -1);
    /// - `others(_)`: `memory.init` (bytes 1, 2, 3, 4 to address 0), `table.grow`,
    ///   `table.fill`, `table.copy` and `table.init` once each, then loads the `i32` at 0.
    fn bulk_fixture(max: Option<u64>) -> Vec<u8> {
        let mut module = Module::new();
        let mut types = TypeSection::new();
        types.ty().function([ValType::I32], [ValType::I32]);
        module.section(&types);
        let mut functions = FunctionSection::new();
        for _ in 0..4 {
            functions.function(0);
        }
        module.section(&functions);
        let mut tables = TableSection::new();
        tables.table(TableType {
            element_type: RefType::FUNCREF,
            table64: false,
            minimum: 1,
            maximum: None,
            shared: false,
        });
        module.section(&tables);
        let mut memories = MemorySection::new();
        memories.memory(wasm_encoder::MemoryType {
            minimum: 2,
            maximum: max,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        module.section(&memories);
        let mut exports = ExportSection::new();
        for (i, name) in ["fill", "copy", "grow", "others"].into_iter().enumerate() {
            exports.export(name, ExportKind::Func, i as u32);
        }
        exports.export("memory", ExportKind::Memory, 0);
        module.section(&exports);
        let mut elements = ElementSection::new();
        elements.passive(Elements::Functions(std::borrow::Cow::Borrowed(&[0])));
        module.section(&elements);
        module.section(&DataCountSection { count: 1 });
        let mut code = CodeSection::new();
        // i = 0; loop { if i >= n break; <op on 64 KiB>; i += 1 }; return i
        let repeat = |op: &[Instruction<'_>]| {
            let mut f = Function::new([(1, ValType::I32)]);
            f.instruction(&Instruction::Block(BlockType::Empty))
                .instruction(&Instruction::Loop(BlockType::Empty))
                .instruction(&Instruction::LocalGet(1))
                .instruction(&Instruction::LocalGet(0))
                .instruction(&Instruction::I32GeU)
                .instruction(&Instruction::BrIf(1));
            for i in op {
                f.instruction(i);
            }
            f.instruction(&Instruction::LocalGet(1))
                .instruction(&Instruction::I32Const(1))
                .instruction(&Instruction::I32Add)
                .instruction(&Instruction::LocalSet(1))
                .instruction(&Instruction::Br(0))
                .instruction(&Instruction::End)
                .instruction(&Instruction::End)
                .instruction(&Instruction::LocalGet(1))
                .instruction(&Instruction::End);
            f
        };
        code.function(&repeat(&[
            Instruction::I32Const(0),
            Instruction::I32Const(0),
            Instruction::I32Const(65536),
            Instruction::MemoryFill(0),
        ]));
        code.function(&repeat(&[
            Instruction::I32Const(0),
            Instruction::I32Const(65536),
            Instruction::I32Const(65536),
            Instruction::MemoryCopy {
                src_mem: 0,
                dst_mem: 0,
            },
        ]));
        let mut grow = Function::new([]);
        grow.instruction(&Instruction::LocalGet(0))
            .instruction(&Instruction::MemoryGrow(0))
            .instruction(&Instruction::End);
        code.function(&grow);
        let null = Instruction::RefNull(wasm_encoder::HeapType::FUNC);
        let mut others = Function::new([]);
        for i in [
            Instruction::I32Const(0),
            Instruction::I32Const(0),
            Instruction::I32Const(4),
            Instruction::MemoryInit {
                mem: 0,
                data_index: 0,
            },
            null.clone(),
            Instruction::I32Const(1),
            Instruction::TableGrow(0),
            Instruction::Drop,
            Instruction::I32Const(0),
            null,
            Instruction::I32Const(1),
            Instruction::TableFill(0),
            Instruction::I32Const(1),
            Instruction::I32Const(0),
            Instruction::I32Const(1),
            Instruction::TableCopy {
                src_table: 0,
                dst_table: 0,
            },
            Instruction::I32Const(0),
            Instruction::I32Const(0),
            Instruction::I32Const(1),
            Instruction::TableInit {
                elem_index: 0,
                table: 0,
            },
            Instruction::I32Const(0),
            Instruction::I32Load(wasm_encoder::MemArg {
                offset: 0,
                align: 2,
                memory_index: 0,
            }),
            Instruction::End,
        ] {
            others.instruction(&i);
        }
        code.function(&others);
        module.section(&code);
        let mut data = DataSection::new();
        data.passive([1u8, 2, 3, 4]);
        module.section(&data);
        module.finish()
    }

    fn bodies_of(wasm: &[u8]) -> Vec<Vec<Operator<'_>>> {
        Parser::new(0)
            .parse_all(wasm)
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
            .collect()
    }

    fn memory_maximums(wasm: &[u8]) -> Vec<Option<u64>> {
        Parser::new(0)
            .parse_all(wasm)
            .filter_map(|p| match p.unwrap() {
                Payload::MemorySection(s) => Some(
                    s.into_iter()
                        .map(|m| m.unwrap().maximum)
                        .collect::<Vec<_>>(),
                ),
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[test]
    fn every_bulk_operation_is_charged_just_before_it_runs() {
        let wasm = bulk_fixture(None);
        Validator::new().validate_all(&wasm).unwrap();
        let metered = meter(&wasm, &Limits::default()).unwrap();
        let survey = survey(&metered).unwrap();
        let scratch = survey.imported_globals + survey.defined_globals - 1;
        let (mut before, mut after) = (0, 0);
        for body in bodies_of(&wasm) {
            before += body.iter().filter(|op| bulk_charge(op).is_some()).count();
        }
        for body in bodies_of(&metered) {
            for (i, op) in body.iter().enumerate() {
                if bulk_charge(op).is_some() {
                    after += 1;
                    // The charge ends by putting the size back from the scratch global.
                    assert!(
                        matches!(body[i - 1], Operator::GlobalGet { global_index } if global_index == scratch),
                        "{op:?} is not charged"
                    );
                }
            }
        }
        // fill, copy, grow, and init + the four table operations.
        assert_eq!((before, after), (8, 8));
    }

    #[test]
    fn bulk_memory_loops_spend_the_allowance_by_the_byte() {
        let wasm = bulk_fixture(None);
        let units = 1_000_000;
        // What one iteration of `fill` (and `copy`) costs in instructions alone: counted as
        // one unit per instruction, a thousand 64 KiB operations would fit the allowance many
        // times over.
        let iteration = region_costs(&bodies_of(&wasm)[0])[1];
        assert!(1000 * iteration * 10 < units, "{iteration}");
        let metered = meter(&wasm, &budget(units)).unwrap();
        // Charged by the byte (4096 units per 64 KiB), 100 fit and 1000 do not.
        let out = run_on_node(
            &metered,
            r#"[["fill", 100], ["fill", 1000], ["copy", 100], ["copy", 1000], ["others", 0]]"#,
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            [
                "100",
                "RuntimeError: divide by zero",
                "100",
                "RuntimeError: divide by zero",
                // memory.init still copied its bytes: the charge left its operands alone.
                "67305985",
            ]
        );
    }

    #[test]
    fn memory_grows_only_to_the_maximum() {
        let limits = Limits {
            budget: DEFAULT_BUDGET,
            max_memory_pages: 4,
        };
        // No maximum, or one above the limit, becomes the limit; a smaller one stays.
        for (declared, kept) in [(None, 4), (Some(100), 4), (Some(3), 3)] {
            let metered = meter(&bulk_fixture(declared), &limits).unwrap();
            assert_eq!(memory_maximums(&metered), [Some(kept)], "{declared:?}");
        }
        // A module that starts above the limit is refused rather than capped below its start.
        let tiny = Limits {
            budget: DEFAULT_BUDGET,
            max_memory_pages: 1,
        };
        assert!(meter(&bulk_fixture(None), &tiny).is_err());
        let metered = meter(&bulk_fixture(None), &limits).unwrap();
        // The memory starts with 2 pages: 2 more reach the limit, 3 (or 10 000, which the
        // allowance can still pay for) more fail (-1) without allocating, and 2^32 - 1 more
        // cost more than the whole allowance, so it traps.
        let out = run_on_node(
            &metered,
            r#"[["grow", 2], ["grow", 3], ["grow", 10000], ["grow", -1]]"#,
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines, ["2", "-1", "-1", "RuntimeError: divide by zero"]);
        // With the default limit (64 MiB: 1024 pages), the same holds at 64 MiB.
        let metered = meter(&bulk_fixture(None), &Limits::default()).unwrap();
        assert_eq!(memory_maximums(&metered), [Some(1024)]);
        let out = run_on_node(&metered, r#"[["grow", 1022], ["grow", 1023]]"#);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines, ["2", "-1"]);
    }

    #[test]
    fn proposals_the_meter_does_not_account_for_are_refused() {
        let mut module = Module::new();
        let mut memories = MemorySection::new();
        memories.memory(wasm_encoder::MemoryType {
            minimum: 1,
            maximum: None,
            memory64: true,
            shared: false,
            page_size_log2: None,
        });
        module.section(&memories);
        let wasm = module.finish();
        Validator::new().validate_all(&wasm).unwrap();
        assert!(meter(&wasm, &Limits::default()).is_err(), "memory64");
    }
}
