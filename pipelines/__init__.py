"""telepipe.pipelines"""
