/// The system allocator, with a region left out of forks for the decoded
/// image of a restore (ckpt_sys::heap): the restore stubs copy none of it.
#[global_allocator]
static ALLOCATOR: ckpt_sys::heap::Allocator = ckpt_sys::heap::Allocator;

fn main() {
    std::process::exit(ckpt_cli::main());
}
