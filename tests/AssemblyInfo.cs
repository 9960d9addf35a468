[assembly: Xunit.CollectionBehavior(DisableTestParallelization = true)] // torchs global generator is shared by all threads: parallel tests would perturb each others seeded runs
