// Script tests run scripts as child processes and do no tensor work themselves: their two collections
// (ScriptCollections) run side by side.
[assembly: Xunit.CollectionBehavior(Xunit.CollectionBehavior.CollectionPerAssembly, MaxParallelThreads = 2)]
