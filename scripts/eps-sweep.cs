#!/usr/bin/env -S dotnet run
#:project ../lib/Carso.csproj
// Robust accuracy against the budget eps in the norm of the settings (default Linf), for the committed PGD-AT classifier
// (APGD-CE + APGD-T) and for CARSO (the CARSO protocol with the budget below, after transfer of the classifier's own
// examples at the same eps), on the same test points, with 95% bands and a monotonicity check. Departures from the
// published protocol are printed and recorded (the classifier's from AutoAttack's defaults are in its variant
// descriptions). Norm = L2 sweeps the L2 PGD-AT classifier (scripts/train-classifier-l2.cs) ONLY: CARSO's purifier is
// trained against Linf attacks on the Linf classifier, so there is no L2 CARSO to sweep (the record's settings and
// variants say so); set Eps to L2 budgets then, e.g. [0, 0.5, 1, 1.5, 2, 3, 5].
//   dotnet run scripts/eps-sweep.cs [--smoke]   -> results/eps-sweep/ (or a temporary folder)

// ---- settings (edit and re-run) --------------------------------------------------------------------
var settings = new Settings(Norm: Norm.Linf, Eps: [0, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3], Defence: new CarsoSettings(Samples: 8, Aggregation: AggregationKind.ExpShare),
    ClassifierAttacks: new AutoAttackSettings(ApgdIterations: 25, NTargetClasses: 3), PgdStepFactor: 2.5 / 10,
    Budget: new AblationBudget(CleanPoints: 100, RobustPoints: 100, Transfer: false, Protocol: new CarsoProtocolSettings(ApgdIterations: 10,
        EotIter: 1, PgdSteps: 10, Surrogate: null, RepresentationPath: true, SquareQueries: 0)));
var run = ScriptRun.Start(settings, args, shardable: true);
if (run.Smoke) settings = settings with { Eps = [0, 0.1, 0.3], ClassifierAttacks = AutoAttackSettings.Smoke, Budget = settings.Budget.Smoke() with { CleanPoints = 8 } };
if (settings.Eps.Zip(settings.Eps.Skip(1)).Any(p => p.Second <= p.First) || settings.Eps.Any(e => e < 0))
    throw new SettingsException("Eps", $"must be >= 0 and strictly increasing, got [{string.Join(", ", settings.Eps)}]");
var classifierPath = Committed.ClassifierPathFor(settings.Norm); // Linf: the committed classifier; L2: the L2 PGD-AT one
var withCarso = settings.Norm == Norm.Linf; // the purifier is Linf-trained: no CARSO variants at another norm
Threat ThreatAt(double eps) => new Threat(settings.Norm, eps).Validated();
if (!withCarso) Console.WriteLine($"{settings.Norm}: the {settings.Norm} PGD-AT classifier ({classifierPath}) only; CARSO's purifier is Linf-trained");

// ---- the variants: per eps the classifier, then (Linf) CARSO after transfer of its examples ------------------
var classifierAttacks = $"APGD-CE + APGD-T; {Budget.Describe(settings.ClassifierAttacks, new AutoAttackSettings())}";
Variant ClassifierAt(double eps) =>
    new($"eps {eps}", withCarso ? classifierAttacks : $"{settings.Norm} threat, the {settings.Norm} PGD-AT classifier ({classifierPath}); {classifierAttacks}", context =>
    {
        var threat = ThreatAt(eps);
        var classifier = Committed.Classifier(context.Device, classifierPath);
        return new VariantModel(Carso.Models.StochasticModels.Fixed(classifier.call), new Protocol("classifier", threat, eps == 0 ? [] :
            [new AttackFamily("apgd-ce+apgd-t", classifierAttacks, m => AutoAttack.Custom([AutoAttack.ApgdCeName, AutoAttack.ApgdTName], threat, settings.ClassifierAttacks, m))]));
    }, X: eps, Series: "classifier");
Variant CarsoAt(double eps) =>
    new($"eps {eps}", "the CARSO protocol (budget above) after transfer of the classifier's examples at this eps", context =>
    {
        var threat = ThreatAt(eps);
        var carso = Committed.Carso(context.Device, settings.Defence);
        var examples = context.Prior[$"classifier/eps {eps}"].WorstCaseImages!; // the classifier variant ran just before
        var transfer = new TransferSet($"(the classifier's examples at eps {eps})", new TransferSetSpec(settings.Norm.ToString(), eps, context.Attacked.Name,
            (int)context.Attacked.Count, "SmallCnn", "", "eps-sweep"), examples, context.Attacked.Labels);
        return new VariantModel(carso.AsModel(), eps == 0 ? new Protocol("carso", threat, []) : CarsoProtocol.Build(carso, threat,
            context.Budget.Attacks with { PgdStepSize = settings.PgdStepFactor * eps }, transfer));
    }, X: eps);
var variants = settings.Eps.SelectMany(eps => withCarso ? new[] { ClassifierAt(eps), CarsoAt(eps) } : [ClassifierAt(eps)]).ToArray();

// ---- run, record, figures -------------------------------------------------------------------------------
Ablation.Run(run, settings, run.SeedOverride ?? settings.Budget.Seed, $"Robust accuracy vs {settings.Norm} eps" +
    (withCarso ? "" : $" (the {settings.Norm} PGD-AT classifier only: CARSO's purifier is Linf-trained)"), "eps", settings.Budget, variants, monotoneInX: true);

/// <summary>Settings: the threat's norm (Linf: the committed classifier and CARSO; L2: the L2 PGD-AT classifier alone), the
/// eps to sweep (increasing, in that norm), CARSO's settings, the classifier's attack budget, PGD+EOT's step as a
/// fraction of eps (2.5 * eps / steps, Madry et al.), the CARSO evaluation budget (its Eps is replaced by each eps).</summary>
record Settings(Norm Norm, double[] Eps, CarsoSettings Defence, AutoAttackSettings ClassifierAttacks, double PgdStepFactor, AblationBudget Budget);
