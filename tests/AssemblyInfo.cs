// Two kinds of tests share the 2 cores of CI. In-process tests share torch's global generator, so they form ONE collection
// (the assembly's default) and run one after another, as before. Tests that run scripts as child processes touch no
// in-process state: they form two more collections (ScriptCollections), which run beside it; a script is only ever run
// from one of them, so two builds of the same script never race. Every libtorch here runs one thread (TestThreads):
// OpenMP threads spin while they wait, and 2 threads per process with 3 processes on 2 cores crawl.
[assembly: Xunit.CollectionBehavior(Xunit.CollectionBehavior.CollectionPerAssembly, MaxParallelThreads = 2)]
