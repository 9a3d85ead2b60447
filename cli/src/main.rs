//! The `tidelog` binary; everything is in the library (see its docs for why).

/// jemalloc: the broker allocates and frees a DMA buffer of up to a few MiB per disk read and
/// per 1 MiB write; glibc's malloc maps and unmaps each (a page fault per 4 KiB, zeroing,
/// TLB shootdowns across the shards' cores), jemalloc reuses them (tuning.md).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    tidelog::main();
}
