//! `declnet::set_num_threads`: it sizes the CPU kernels' thread pool once; a later call, or a
//! call after the pool exists, is an error that says so. Its own test binary, because the
//! pool is global to the process.

use declnet::prelude::*;

#[test]
fn the_thread_count_is_set_once_before_the_pool_runs() {
    assert!(declnet::set_num_threads(0).is_err());
    declnet::set_num_threads(1).unwrap();
    assert_eq!(declnet::num_threads(), 1);
    // A product large enough to use the pool runs on its one thread.
    let a = Tensor::ones([512, 512], &Cpu);
    assert_eq!(a.mm(&a).to_vec()[0], 512.0);
    let error = declnet::set_num_threads(2).unwrap_err();
    assert_eq!(
        error.to_string(),
        "usage: set_num_threads(2): the thread pool already exists (threads: 1); set it before \
         the first parallel kernel"
    );
}
