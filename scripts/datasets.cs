#!/usr/bin/env -S dotnet run
#:project ../lib/Carso.csproj
// Loads a dataset (Fashion-MNIST by default), prints its size per split and per class, and draws a grid of seeded
// sample test images per class; writes the figure and a run record to results/datasets/.
//   dotnet run scripts/datasets.cs            -> results/datasets/
//   dotnet run scripts/datasets.cs --smoke    -> a temporary folder

// ---- settings -------------------------------------------------------------------------------
var settings = new Settings(Dataset: "fashion-mnist", SamplesPerClass: 10, Seed: 0, Folder: null);
var run = ScriptRun.Start(settings, args);
if (run.Smoke) settings = settings with { SamplesPerClass = 3 };
var seed = run.SeedOverride ?? settings.Seed;

// ---- data ------------------------------------------------------------------------------------
var splits = new[] { Split.Train, Split.Test }
    .Select(split => (split, data: Datasets.Load(settings.Dataset, split, settings.Folder)))
    .ToArray();
var classes = splits[0].data.Classes;
foreach (var (split, data) in splits)
    Console.WriteLine($"{data.Name}: {data.Count} images of {string.Join("x", data.ImageShape)}");

var counts = splits.ToDictionary(s => s.split.ToString().ToLowerInvariant(), s => s.data.ClassCounts());
Console.WriteLine();
Console.WriteLine($"{"class",-16}{"train",8}{"test",8}");
for (var c = 0; c < classes.Count; c++)
    Console.WriteLine($"{classes[c],-16}{counts["train"][c],8}{counts["test"][c],8}");
Console.WriteLine($"{"total",-16}{counts["train"].Sum(),8}{counts["test"].Sum(),8}");

// ---- figure: the first SamplesPerClass test images of each class, after a seeded shuffle ------
var test = splits[1].data;
Gallery samples;
using (var scope = NewDisposeScope())
{
    var order = DatasetOps.Permutation(test.Count, seed);
    var labels = test.Labels.index_select(0, order);
    var picks = Enumerable.Range(0, classes.Count)
        .Select(c => order.index_select(0, nonzero(labels.eq(c)).flatten().narrow(0, 0, settings.SamplesPerClass)))
        .ToArray();
    var grid = test.Images.index_select(0, cat(picks));
    samples = Gallery.Of(grid, settings.SamplesPerClass, classes,
        $"{settings.Dataset}: {settings.SamplesPerClass} test images per class (seed {seed})");
}
var galleries = new Dictionary<string, Gallery> { [$"{settings.Dataset}-samples"] = samples };

// ---- record --------------------------------------------------------------------------------
var record = run.Finish(settings, seed, new
{
    splits = splits.ToDictionary(s => s.split.ToString().ToLowerInvariant(),
        s => new { count = s.data.Count, imageShape = s.data.ImageShape }),
    classes,
    perClass = counts,
    galleries, // the figure, redrawable from this record (scripts/figures.cs)
});
foreach (var (name, figure) in Gallery.FiguresOf(record)) run.SaveFigure(figure, name);
foreach (var (_, data) in splits) data.Dispose();

/// <summary>Settings: edit and re-run. Folder null = the dataset's default search path.</summary>
record Settings(string Dataset, int SamplesPerClass, long Seed, string? Folder);
