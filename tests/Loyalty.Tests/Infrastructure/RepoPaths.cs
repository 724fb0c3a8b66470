namespace Loyalty.Tests.Infrastructure;

/// <summary>Where the repository is, seen from the test binaries.</summary>
public static class RepoPaths
{
    /// <summary>The folder holding LoyaltyGrains.sln.</summary>
    public static string Root()
    {
        DirectoryInfo? root = new(AppContext.BaseDirectory);
        while (root is not null && !File.Exists(Path.Combine(root.FullName, "LoyaltyGrains.sln")))
        {
            root = root.Parent;
        }

        return root?.FullName ?? throw new InvalidOperationException("LoyaltyGrains.sln not found above the test folder.");
    }
}
