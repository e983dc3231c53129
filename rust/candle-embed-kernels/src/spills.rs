//! The multiply-add loops keep their sums in registers: a check of this build's own machine code.
//!
//! The software models test every kernel's bits on any CPU, but not its speed, and the kernels'
//! worst slowdowns so far came from register allocation, which changes no bit. With 6-row AVX2
//! GEMM blocks the compiler kept the 12 sums on the stack, a load and a store around every FMA:
//! 110–140 GFLOP/s where 5 rows run 200 (AMD Zen 4). An unrelated change around the 12-row
//! AVX-512 block once put its broadcasts on the stack (200 → 140). The AVX2 attention scores
//! with 4 rows at a time spilled their 16 sums. Each was seen only by timing on a CPU that runs
//! the kernel, and the AVX2-only and Skylake-class CPUs are rarely the one a session has.
//!
//! So this reads the release test binary's machine code (GNU objdump) and checks, for each GEMM
//! micro-kernel and attention pass of the x86 families, that no innermost loop of multiply-adds
//! moves a vector register to or from a fixed stack slot. Indexed stack addresses are a local
//! array's elements (a pass's probabilities, broadcast in P·V) and are fine; loops that convert
//! floats to integers are the softmax's `exp2`, which is not multiply-add bound and is left out.
//! AMX keeps its sums in tile registers, which the compiler does not allocate; it is not checked.
//! The check reads code and runs none of it, so it holds every family to it on any x86 CPU.
//! Unoptimized code keeps everything on the stack, so it runs in release builds only.

use std::collections::HashMap;
use std::process::Command;

/// The functions whose loops are checked: the demangled name, without the hash.
const KERNELS: [&str; 6] = [
    "candle_embed_kernels::gemm::widened::x86::avx2_block",
    "candle_embed_kernels::gemm::widened::x86::avx512_block",
    "candle_embed_kernels::gemm::avx512::x86::bf16_block",
    "<candle_embed_kernels::attention::widened::x86::Avx2 as \
     candle_embed_kernels::attention::widened::Wide>::pass",
    "<candle_embed_kernels::attention::widened::x86::Avx512 as \
     candle_embed_kernels::attention::widened::Wide>::pass",
    "candle_embed_kernels::attention::avx512::avx512_pass",
];

/// One instruction: its address and its AT&T text without the trailing comment.
type Instruction = (u64, String);

/// Every function of this test binary with its instructions, by demangled name (the GEMM's
/// micro-kernels share a name, one function per block height).
fn disassemble() -> HashMap<String, Vec<Vec<Instruction>>> {
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new("objdump")
        .args(["-d", "--no-show-raw-insn", "-C"])
        .arg(&exe)
        .output()
        .expect("objdump (GNU binutils) is needed to read this test binary's machine code");
    assert!(out.status.success(), "objdump failed on {}", exe.display());
    let mut functions: HashMap<String, Vec<Vec<Instruction>>> = HashMap::new();
    let mut current: Option<&mut Vec<Instruction>> = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // `0000000000093580 <name>:` opens a function; `   93584:\tvmovups ...` is an instruction.
        if let Some(name) = line
            .split_once(" <")
            .filter(|(addr, _)| !addr.is_empty() && addr.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|(_, rest)| rest.strip_suffix(">:"))
        {
            let bodies = functions.entry(name.to_owned()).or_default();
            bodies.push(Vec::new());
            current = bodies.last_mut();
        } else if let (Some(code), Some((addr, text))) = (current.as_mut(), line.split_once(":\t"))
        {
            if let Ok(addr) = u64::from_str_radix(addr.trim(), 16) {
                let text = text.split('#').next().unwrap_or("").trim();
                code.push((addr, text.to_owned()));
            }
        }
    }
    functions
}

/// The target of a jump or conditional branch (`jne 93580 <...>`), if `text` is one.
fn jump_target(text: &str) -> Option<u64> {
    let (mnemonic, operand) = text.split_once(char::is_whitespace)?;
    if !mnemonic.starts_with('j') {
        return None;
    }
    u64::from_str_radix(operand.split_whitespace().next()?, 16).ok()
}

/// The innermost loops of a function (a branch back to an address in it, enclosing no other such
/// branch), as slices of its instructions.
fn innermost_loops(code: &[Instruction]) -> Vec<&[Instruction]> {
    let index: HashMap<u64, usize> = code.iter().enumerate().map(|(i, (a, _))| (*a, i)).collect();
    let loops: Vec<(usize, usize)> = code
        .iter()
        .enumerate()
        .filter_map(|(i, (addr, text))| {
            let target = jump_target(text).filter(|t| t <= addr)?;
            Some((*index.get(&target)?, i))
        })
        .collect();
    loops
        .iter()
        .filter(|&&(s, e)| {
            !loops
                .iter()
                .any(|&(os, oe)| (os, oe) != (s, e) && s <= os && oe <= e)
        })
        .map(|&(s, e)| &code[s..=e])
        .collect()
}

fn multiply_adds(body: &[Instruction]) -> usize {
    body.iter()
        .filter(|(_, t)| t.starts_with("vfmadd") || t.starts_with("vdpbf16ps"))
        .count()
}

/// Whether the instruction moves a vector register to or from `disp(%rsp)`: a spill or a reload.
fn touches_stack_slot(text: &str) -> bool {
    let vector = ["%xmm", "%ymm", "%zmm"].iter().any(|r| text.contains(r));
    vector && text.contains("(%rsp)")
}

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "unoptimized code keeps everything on the stack; run with --release"
)]
fn multiply_add_loops_keep_their_sums_in_registers() {
    let functions = disassemble();
    for name in KERNELS {
        let bodies = functions.get(name).unwrap_or_else(|| {
            panic!("no function {name} in the test binary: renamed or inlined?")
        });
        let mut checked = 0;
        for code in bodies {
            for body in innermost_loops(code) {
                let converts = body.iter().any(|(_, t)| t.contains("cvtps2dq"));
                if multiply_adds(body) < 4 || converts {
                    continue;
                }
                checked += 1;
                let spills: Vec<String> = body
                    .iter()
                    .filter(|(_, t)| touches_stack_slot(t))
                    .map(|(a, t)| format!("{a:x}: {t}"))
                    .collect();
                assert!(
                    spills.is_empty(),
                    "{name}: the loop at {:x} ({} multiply-adds) keeps vectors on the stack:\n{}",
                    body[0].0,
                    multiply_adds(body),
                    spills.join("\n")
                );
            }
        }
        // Every function in the list has multiply-add loops; finding none means the loop
        // finder no longer sees them, and the check would pass on nothing.
        assert!(checked > 0, "{name}: no multiply-add loop found to check");
    }
}
