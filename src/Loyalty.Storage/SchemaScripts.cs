using System.Reflection;

namespace Loyalty.Storage;

/// <summary>
/// The project's own schema scripts, embedded in this assembly as
/// <c>Sql/&lt;Dialect&gt;/NNN_name.sql</c>. Each script is one migration, applied once, in order
/// of its number.
/// </summary>
internal static class SchemaScripts
{
    /// <summary>A script's version number, name and text.</summary>
    internal sealed record Script(int Version, string Name, string Text);

    /// <summary>The scripts of one dialect folder (<c>Sqlite</c> or <c>Postgres</c>), in order.</summary>
    public static IReadOnlyList<Script> For(string dialect)
    {
        Assembly assembly = typeof(SchemaScripts).Assembly;
        string prefix = $"Loyalty.Storage.Sql.{dialect}.";
        var scripts = new List<Script>();
        foreach (string resource in assembly.GetManifestResourceNames())
        {
            // The folder separator of the logical name depends on the build machine.
            string normalized = resource.Replace('/', '.').Replace('\\', '.');
            if (!normalized.StartsWith(prefix, StringComparison.Ordinal))
            {
                continue;
            }

            string name = normalized[prefix.Length..^".sql".Length];
            int version = int.Parse(name.AsSpan(0, name.IndexOf('_', StringComparison.Ordinal)), System.Globalization.CultureInfo.InvariantCulture);
            using Stream stream = assembly.GetManifestResourceStream(resource)
                ?? throw new InvalidOperationException($"Embedded script {resource} is missing.");
            using var reader = new StreamReader(stream);
            scripts.Add(new Script(version, name, reader.ReadToEnd()));
        }

        if (scripts.Count == 0)
        {
            throw new InvalidOperationException($"No schema scripts are embedded for {dialect}.");
        }

        scripts.Sort((a, b) => a.Version.CompareTo(b.Version));
        return scripts;
    }
}
