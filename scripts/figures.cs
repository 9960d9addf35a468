#!/usr/bin/env -S dotnet run
#:project ../lib/Carso.csproj
// Regenerates every figure and the README results tables from the run records under results/ (results/*/run.json),
// without training or attacking anything: each script's figures are drawn by the same function the script uses, from
// the metrics its record holds. Without --smoke or --out it writes over results/<script>/ and README.md; with
// either, everything goes to the output folder.
//   dotnet run scripts/figures.cs            -> figures over results/<script>/, the table in README.md
//   dotnet run scripts/figures.cs --smoke    -> reads results/, writes everything to a temporary folder (HTML for
//                                               every figure, the PNG of the first only)

// ---- settings -------------------------------------------------------------------------------
var settings = new Settings(Results: "results");
var run = ScriptRun.Start(settings, args);
var root = Paths.RepoRoot() ?? throw new DirectoryNotFoundException(
    "figures.cs must run inside the repository (no Carso.slnx found above the script or the current folder)");
var resultsRoot = Path.Combine(root, settings.Results);
if (!Directory.Exists(resultsRoot))
    throw new SettingsException(nameof(Settings.Results), $"'{resultsRoot}' does not exist; point it at the folder of run records (relative to the repository root)");
// Smoke mode (and --out) never write over results/ or README.md: everything goes under the run's output folder.
var inPlace = !run.Smoke && run.OutputDir == Path.GetFullPath(Path.Combine(resultsRoot, "figures"));
string FigureFolder(string script) => inPlace ? Path.Combine(resultsRoot, script) : Path.Combine(run.OutputDir, script);

// ---- records --------------------------------------------------------------------------------
var records = new Dictionary<string, RunRecord>();
foreach (var file in Directory.GetFiles(resultsRoot, "run.json", SearchOption.AllDirectories).Order())
{
    var folder = Path.GetFileName(Path.GetDirectoryName(file))!;
    if (folder == "figures" || file.Contains($"{Path.DirectorySeparatorChar}checkpoint{Path.DirectorySeparatorChar}")) continue;
    var record = RunRecord.Load(file);
    if (record.Smoke) { Console.WriteLine($"skipped {file}: a smoke run"); continue; }
    records[folder] = record;
}
Console.WriteLine($"run records: {string.Join(", ", records.Keys)}");

// ---- figures ----------------------------------------------------------------------------------
var drawn = new List<string>();
foreach (var (folder, record) in records)
{
    if (Reports.For(record) is not { } figures)
    {
        Console.WriteLine($"no report for script '{record.Script}' ({folder}/run.json): nothing to draw");
        continue;
    }
    var outFolder = FigureFolder(folder);
    Directory.CreateDirectory(outFolder);
    foreach (var (name, figure) in figures(record))
    {
        // Smoke mode writes every figure's HTML but renders only the first PNG: one Chromium start per figure (~35 of
        // them) was most of the smoke's time (200 s of CI).
        var (html, png, skipped) = Figures.Save(figure, Path.Combine(outFolder, name + ".html"), Path.GetDirectoryName(outFolder)!,
            png: !run.Smoke || drawn.Count == 0);
        Console.WriteLine($"figure: {html}{(png is null ? $" ({skipped})" : " (+ .png)")}");
        drawn.Add(Path.GetRelativePath(inPlace ? resultsRoot : run.OutputDir, html));
    }
}

// ---- README results table -----------------------------------------------------------------------
var rows = ReadmeResults.Rows(records);
var readmePath = Path.Combine(root, "README.md");
var ablationRows = ReadmeResults.AblationRows(records);
var readme = ReadmeResults.Rewrite(File.ReadAllText(readmePath), rows);
readme = ReadmeResults.Rewrite(readme, ablationRows, ReadmeResults.AblationsBegin, ReadmeResults.AblationsEnd);
var readmeOut = inPlace ? readmePath : run.Output("README.md");
AtomicFile.WriteAllText(readmeOut, readme);
Console.WriteLine($"results table ({rows.Count} rows): {readmeOut}");
Console.Write(ResultTable.Text(rows));
Console.WriteLine($"sweep and ablations table ({ablationRows.Count} rows)");

run.Finish(settings, 0, new { records = records.Keys, figures = drawn, tableRows = rows.Count, ablationRows = ablationRows.Count });

/// <summary>Settings: Results is the folder of run records, relative to the repository root.</summary>
record Settings(string Results);
