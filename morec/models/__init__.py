"""Models know tensors only: item towers, user encoders and the recommenders built from them.
The factory that builds a run's recommender from its typed values is morec.models.build."""
from morec.models.recommender import DSSMRecommender, Recommender, SASRecRecommender, SequentialRecommender
from morec.models.towers import FeatureTower, FusionTower, IdTower, ItemTower, LayerMixFeatureTower

__all__ = ["Recommender", "SequentialRecommender", "SASRecRecommender", "DSSMRecommender", "IdTower",
           "ItemTower", "FeatureTower", "LayerMixFeatureTower", "FusionTower"]
