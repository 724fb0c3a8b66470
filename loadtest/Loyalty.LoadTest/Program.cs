using Loyalty.LoadTest;

try
{
    if (args.Contains("--help") || args.Contains("-h"))
    {
        Console.WriteLine(LoadOptions.Usage);
        return 0;
    }

    LoadOptions options = LoadOptions.Parse(args);
    return await new LoadRun(options).RunAsync();
}
catch (ArgumentException e)
{
    Console.Error.WriteLine($"loadtest: {e.Message}");
    Console.Error.WriteLine(LoadOptions.Usage);
    return 2;
}
