using Carso.IO;
using System.Diagnostics;
using System.Text.Json.Nodes;

namespace Carso.Reporting;

/// <summary>A Plotly figure as its JSON: traces, layout, and the pixel size it is drawn at.</summary>
public sealed record Figure(JsonArray Data, JsonObject Layout, int Width, int Height)
{
    /// <summary>The figure from a Plotly.NET chart (its traces and layout), at the given size.</summary>
    public static Figure FromPlotlyNet(Plotly.NET.GenericChart chart, int width, int height)
    {
        var json = JsonNode.Parse(Plotly.NET.GenericChart.toFigureJson(chart))!.AsObject();
        return new Figure(json["data"]?.AsArray().DeepClone().AsArray() ?? [],
                          json["layout"]?.AsObject().DeepClone().AsObject() ?? [], width, height);
    }
}

/// <summary>
/// Writes figures as HTML that renders offline: plotly.js is not inlined and not fetched from a CDN,
/// but read from one local copy, {root}/_plotly/plotly-VERSION.min.js, shared by every figure under that root
/// (taken from the copy Plotly.NET ships). PNGs are rendered by headless Chromium when it is installed.
/// </summary>
public static class Figures
{
    public const string PlotlyFolder = "_plotly";
    const string ResourcePrefix = "Plotly.NET.plotly-";

    /// <summary>The bundled plotly.js version, e.g. 2.28.0.</summary>
    public static string PlotlyJsVersion =>
        PlotlyResourceName()[ResourcePrefix.Length..^".min.js".Length];

    static string PlotlyResourceName() =>
        typeof(Plotly.NET.GenericChart).Assembly.GetManifestResourceNames()
            .Single(n => n.StartsWith(ResourcePrefix) && n.EndsWith(".min.js"));

    /// <summary>Makes sure {root}/_plotly/ holds plotly.js and its licence; returns the script's path.</summary>
    public static string EnsurePlotlyJs(string root)
    {
        var resource = PlotlyResourceName();
        var target = Path.Combine(root, PlotlyFolder, $"plotly-{PlotlyJsVersion}.min.js");
        if (!File.Exists(target))
        {
            var assembly = typeof(Plotly.NET.GenericChart).Assembly;
            foreach (var (name, path) in new[] { (resource, target), (resource + ".LICENSE.txt", target + ".LICENSE.txt") })
            {
                using var source = assembly.GetManifestResourceStream(name);
                if (source is null) continue;
                AtomicFile.Write(path, source.CopyTo);
            }
        }
        return target;
    }

    /// <summary>
    /// Writes the figure's HTML (referencing the shared plotly.js under <paramref name="plotlyRoot"/> by a
    /// relative path) and, where Chromium is installed, a PNG beside it. Returns the PNG path, or null with
    /// the reason it was skipped.
    /// </summary>
    public static (string Html, string? Png, string? PngSkipped) Save(Figure figure, string htmlPath, string plotlyRoot, bool png = true)
    {
        var plotlyJs = EnsurePlotlyJs(plotlyRoot);
        var htmlFull = Path.GetFullPath(htmlPath);
        var relative = Path.GetRelativePath(Path.GetDirectoryName(htmlFull)!, plotlyJs).Replace('\\', '/');
        var layout = figure.Layout.DeepClone().AsObject();
        layout["width"] = figure.Width;
        layout["height"] = figure.Height;
        var title = layout["title"]?["text"]?.GetValue<string>() ?? Path.GetFileNameWithoutExtension(htmlPath);
        var html = $$"""
            <!DOCTYPE html>
            <html>
            <head>
            <meta charset="utf-8">
            <title>{{System.Net.WebUtility.HtmlEncode(title)}}</title>
            <script src="{{relative}}"></script>
            <style>body { margin: 0; background: white; }</style>
            </head>
            <body>
            <div id="figure" style="width:{{figure.Width}}px;height:{{figure.Height}}px"></div>
            <script>
            Plotly.newPlot("figure", {{figure.Data.ToJsonString()}}, {{layout.ToJsonString()}}, {"displaylogo": false, "responsive": false, "displayModeBar": false});
            </script>
            </body>
            </html>
            """;
        AtomicFile.WriteAllText(htmlFull, html);
        if (!png) return (htmlFull, null, "not requested");
        var pngPath = Path.ChangeExtension(htmlFull, ".png");
        var skipped = Chromium.Screenshot(htmlFull, pngPath, figure.Width, figure.Height);
        return (htmlFull, skipped is null ? pngPath : null, skipped);
    }
}

/// <summary>Headless Chromium (Debian's package) as a PNG renderer for HTML figures.</summary>
public static class Chromium
{
    public const string InstallCommand = "sudo apt-get update && sudo apt-get install -y chromium";
    static readonly string[] Candidates = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"];

    public static string? Find() =>
        Environment.GetEnvironmentVariable("CARSO_CHROMIUM") is { Length: > 0 } custom && File.Exists(custom)
            ? custom
            : Candidates.FirstOrDefault(File.Exists);

    /// <summary>Screenshots the page into a PNG of (about) the given size. Returns null on success, else why not.</summary>
    public static string? Screenshot(string htmlPath, string pngPath, int width, int height, int timeoutSeconds = 60)
    {
        var chromium = Find();
        if (chromium is null)
            return $"PNG skipped: Chromium is not installed ({InstallCommand} to get PNGs beside the HTML figures)";
        var profile = Directory.CreateTempSubdirectory("carso-chromium-");
        var temp = Path.Combine(profile.FullName, "shot.png");
        try
        {
            var info = new ProcessStartInfo(chromium)
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            // A window a little larger than the figure, so the legend is not clipped.
            foreach (var arg in new[]
                     {
                         "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--hide-scrollbars", $"--user-data-dir={profile.FullName}", "--virtual-time-budget=5000",
                         $"--screenshot={temp}", $"--window-size={width + 16},{height + 16}",
                         new Uri(htmlPath).AbsoluteUri,
                     })
                info.ArgumentList.Add(arg);
            using var process = Process.Start(info)!;
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            if (!process.WaitForExit(timeoutSeconds * 1000))
            {
                process.Kill(entireProcessTree: true);
                return $"PNG skipped: Chromium did not finish within {timeoutSeconds} s";
            }
            if (!File.Exists(temp))
                return $"PNG skipped: Chromium exited with {process.ExitCode} and wrote no screenshot: " +
                       stderr.Result.Split('\n').LastOrDefault(l => l.Trim().Length > 0);
            AtomicFile.WriteAllBytes(pngPath, File.ReadAllBytes(temp));
            return null;
        }
        finally
        {
            try { profile.Delete(recursive: true); } catch (IOException) { }
        }
    }
}
