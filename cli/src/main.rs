//! The `tidelog` binary; everything is in the library (see its docs for why).

fn main() {
    tidelog::main();
}
